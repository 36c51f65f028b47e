"""The one pass over a data config, chunk by chunk: read -> convert -> validate -> deduplicate -> encode.

`load_splits` and `preflight` both run `scan`. It holds one chunk of rows at a time (`sources.CHUNK`
records) and keeps per row only what later steps need: 16 bytes for duplicate detection, and per
valid row its split keys (8 bytes each: prompt, and row for split_by=row), side and truncation flag, and its token lengths; the first
problems and the counts per reason (`validate.ProblemLog`). Valid rows and their features go to a
`sink` (`spill.Spill` for training). A row gets the same problems, in the same order, as when all
rows were held at once: schema problems, then `duplicate` (of an earlier schema-valid row), then
the encoder's (e.g. `truncated_empty`). A progress bar (tqdm, on stderr) appears for inputs that
take more than PROGRESS_DELAY seconds; TQDM_DISABLE=1 turns it off.
"""

from __future__ import annotations

import hashlib
import json
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlhf.errors import UserError

from .chat import has_template
from .config import DataConfig
from .encode import Encoded, Encoder, is_conversational, require_template
from .presets import PRESETS
from .rows import Item, RowError
from .sources import Raw, Source, open_source
from .split import prompt_key, split_hash
from .unpaired import normalized
from .validate import Deduper, ProblemLog, row_key

PROGRESS_DELAY = 2.0  # seconds before a bar shows: quick (small) inputs print nothing


class Sink(Protocol):
    def add(self, rows: list[dict[str, Any]], features: list[dict[str, Any]] | None) -> None: ...


@dataclass
class Tally:
    """What one pass leaves behind: counts, a bounded log of problems, and a few numbers per valid row."""

    read: int = 0  # raw records (lines, or trees for oasst_trees), after max_rows
    rows: int = 0  # canonical rows they gave
    conversational: bool = False
    plain_rows_with_template: int = 0
    problems: ProblemLog = field(default_factory=ProblemLog)
    hashes: array = field(default_factory=lambda: array("Q"))  # whole-row split key per valid row (split_by=row)
    prompts: array = field(default_factory=lambda: array("Q"))  # prompt split key per valid row (`split.prompt_key`)
    eval_origins: list = field(default_factory=list)  # per valid row of data.eval_split: where it came from
    is_eval: bytearray = field(default_factory=bytearray)  # per valid row: from data.eval_split
    truncated: bytearray = field(default_factory=bytearray)  # per valid row: lost tokens at max_length
    lengths: array = field(default_factory=lambda: array("l"))  # every encoded sequence's length before truncation
    tokens: int = 0  # tokens handed to the trainer
    trained_tokens: int = 0  # of which carry loss (sft)
    flagged: int = 0  # valid rows for which `scan(flag=...)` said True
    margin: dict = field(default_factory=lambda: {True: [0, None], False: [0, None]})  # pairs with/without: [n, first]
    negative_margin: list = field(default_factory=lambda: [0, None])  # valid pairs with margin < 0: [n, first]
    digest: Any = field(default_factory=lambda: hashlib.blake2b(digest_size=16))  # of every record read (`fingerprint`)

    @property
    def fingerprint(self) -> str:
        """Content hash of the records read, in order, with their side (train / data.eval_split): what a
        run trained on, recorded in its manifest and checked on resume (`rlhf.run.fingerprint`)."""
        return "blake2b:" + self.digest.hexdigest()

    @property
    def valid(self) -> int:
        return len(self.truncated)


def scan(cfg: DataConfig, encoder: Encoder | None = None, tokenizer: Any = None, *, sink: Sink | None = None,
         split_keys: bool = False, flag: Callable[[dict[str, Any]], bool] | None = None,
         progress: bool = True) -> Tally:
    """Run every row of `cfg`'s source (and `cfg.eval_split`) through validation and `encoder`.

    Never raises for a bad row (it is counted and logged); raises UserError for a source that cannot
    be read or has no rows, and for conversations without a chat template (`require_template`).
    split_keys: keep each valid row's whole-row `split_hash` (for data.split_by=row); the prompt's
    hash (`split.prompt_key`) is always kept."""
    tok = tokenizer if tokenizer is not None else getattr(encoder, "tok", None)
    state = _Pass(cfg, encoder, tok, Tally(), Deduper() if cfg.dedupe else None, sink, split_keys, flag)
    sides = [(cfg.hf_split, False)] + ([(cfg.eval_split, True)] if cfg.eval_split else [])
    for split, is_eval in sides:
        source = open_source(cfg.source, split, max_rows=cfg.max_rows, columns=cfg.columns, hf_config=cfg.hf_config,
                             revision=cfg.revision, data_files=cfg.data_files)
        if is_eval and not source.has_splits:
            raise UserError(f"data.eval_split: {cfg.source} holds one dataset without splits; use eval_fraction / "
                            "eval_rows, or a source with splits (a save_to_disk DatasetDict, or hf:<dataset>)")
        read = state.tally.read
        with _bar(source, progress) as bar:
            for chunk in source.chunks:
                state.chunk(chunk, is_eval)
                bar.update(len(chunk))
        if state.tally.read == read:
            what = f"data.eval_split: split {split!r} of" if is_eval else "data.source:"
            raise UserError(f"{what} {cfg.source} has no rows")
    (n_with, first_with), (n_without, first_without) = state.tally.margin[True], state.tally.margin[False]
    if n_with and n_without:
        # TRL's reward loss subtracts the `margin` column from every pair: a missing one is not 0 by itself
        raise UserError(f"data.source: {cfg.source}: field 'margin' is set on {n_with} pairs (first {first_with}) "
                        f"but missing on {n_without} (first {first_without}); give every pair a margin "
                        "(0 for no margin) or none")
    return state.tally


def _bar(source: Source, enabled: bool):
    from tqdm.auto import tqdm

    off = {} if enabled else {"disable": True}  # when enabled, TQDM_DISABLE=1 in the environment still wins
    return tqdm(total=source.total, desc=f"data {source.label}", unit=" records", unit_scale=True,
                delay=PROGRESS_DELAY, mininterval=1.0, file=sys.stderr, dynamic_ncols=True, **off)


@dataclass
class _Pass:
    cfg: DataConfig
    encoder: Encoder | None
    tok: Any
    tally: Tally
    dedupe: Deduper | None
    sink: Sink | None
    split_keys: bool
    flag: Callable[[dict[str, Any]], bool] | None

    def __post_init__(self) -> None:
        self.template = self.tok is not None and has_template(self.tok)
        c = self.cfg.conversational
        self.dialogue_as_turns = c is True or (c == "auto" and self.template)
        self.convert = PRESETS[self.cfg.format].convert

    def chunk(self, raw: list[Raw], is_eval: bool) -> None:
        items = self._items(raw)
        self._digest(raw, is_eval)
        ok = [it for it in items if it.ok]
        keys = [row_key(it.row) for it in ok] if self.dedupe is not None or self.split_keys else None
        if self.dedupe is not None:
            for it, key in zip(ok, keys, strict=True):
                self.dedupe.check(it, key)
            keys = [k for it, k in zip(ok, keys, strict=True) if it.ok]
            ok = [it for it in ok if it.ok]
        if self.cfg.kind == "pair":
            for it in ok:
                has = it.row.get("margin") is not None
                seen = self.tally.margin[has]
                seen[0] += 1
                seen[1] = seen[1] or str(it.origin)
        conv = [is_conversational(it.row) for it in ok]
        self.tally.conversational = self.tally.conversational or any(conv)
        if self.template:
            self.tally.plain_rows_with_template += conv.count(False)
        encs = self._encode(ok)
        t = self.tally
        t.read += len(raw)
        t.rows += len(items)
        for it in items:
            if it.problems:
                t.problems.add(it)
        good = [i for i, it in enumerate(ok) if not it.problems]
        rows = [ok[i].row for i in good]
        t.is_eval.extend(b"\1" * len(good) if is_eval else bytes(len(good)))
        seed = self.cfg.seed
        t.prompts.extend(split_hash(prompt_key(r), seed) for r in rows)
        if is_eval:
            t.eval_origins.extend(str(ok[i].origin) for i in good)
        if self.split_keys:
            t.hashes.extend(split_hash(keys[i], seed) for i in good)
        if self.cfg.kind == "pair":
            for i in good:
                m = ok[i].row.get("margin")
                if m is not None and m < 0:
                    t.negative_margin[0] += 1
                    t.negative_margin[1] = t.negative_margin[1] or str(ok[i].origin)
        if self.flag is not None:
            t.flagged += sum(1 for r in rows if self.flag(r))
        if encs is None:
            t.truncated.extend(bytes(len(good)))
        else:
            self._count(encs, good)
        if self.sink is not None:
            self.sink.add(rows, None if encs is None else [encs[i].features for i in good])

    def _digest(self, raw: list[Raw], is_eval: bool) -> None:
        """Feed the records' content to the data fingerprint (canonical JSON: key order and whitespace
        of the file do not matter, every value does)."""
        update = self.tally.digest.update
        for _, record in raw:
            text = repr(record) if isinstance(record, RowError) else json.dumps(record, sort_keys=True, default=str)
            update(b"E" if is_eval else b"T")
            update(text.encode("utf-8", "surrogatepass"))
            update(b"\n")

    def _items(self, raw: list[Raw]) -> list[Item]:
        """Convert (the format's preset) and schema-check each record: problems attached, not raised."""
        kind, conversational, convert = self.cfg.kind, self.cfg.conversational is True, self.convert
        items: list[Item] = []
        for origin, record in raw:
            try:
                if isinstance(record, RowError):
                    raise record
                rows = convert(record, conversational=self.dialogue_as_turns, kind=kind)
            except RowError as e:
                items.append(Item(origin, None, [e.problem]))
                continue
            for row in rows:  # a pair / ranked row read as kind unpaired gives several rows (rlhf.data.unpaired)
                for clean, problems in normalized(row, kind, conversational=conversational):
                    items.append(Item(origin, clean, problems))
        return items

    def _encode(self, ok: list[Item]) -> list[Encoded] | None:
        """Encode the chunk's valid rows; a row the encoder refuses gets its problem (e.g. truncated_empty)."""
        if self.encoder is None:
            return None
        rows = [it.row for it in ok]
        require_template(rows, self.encoder.tok, self.cfg.source)
        encs = self.encoder.encode(rows)
        for it, enc in zip(ok, encs, strict=True):
            if enc.problem is not None:
                it.problems.append(enc.problem)
        return encs

    def _count(self, encs: list[Encoded], good: list[int]) -> None:
        t = self.tally
        for i in good:
            e = encs[i]
            t.truncated.append(e.truncated)
            t.lengths.extend(e.lengths)
            t.tokens += e.tokens
            t.trained_tokens += e.trained_tokens
