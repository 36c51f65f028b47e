"""`load_splits`: source -> preset -> validation -> encoding -> (drop or raise) -> seeded split.

The steps are shared with `preflight` through `prepare` and `encode_items`, which never raise for a
bad row: they attach every problem to its row, and the caller decides (raise one error, drop, or
report). Given an encoder (`rlhf.data.encode`), the rows are also turned into the exact features
the trainer consumes, and a row the encoder cannot make trainable is a `truncated_empty` problem:
what validation accepts is what the trainer trains on, row for row (`Ledger`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rlhf.errors import UserError

from .chat import has_template
from .config import DataConfig
from .encode import Encoder, is_conversational, require_template
from .presets import PRESETS
from .rows import Item, RowError, valid_rows
from .sources import read_source
from .split import split_indices
from .validate import invalid_error, mark_duplicates, normalize, reason_counts, row_key


@dataclass
class Ledger:
    """Every row accounted for: read -> rows -> invalid (by reason) -> valid = train + eval.

    `truncated_*` count valid rows that lost tokens at max_length (and are trained on what is
    kept); `trained` / `evaluated` are filled in by the stage with the lengths of the datasets its
    trainer holds (for the online RL stages: the distinct prompts)."""

    read: int  # raw records (lines, or trees for oasst_trees), after max_rows
    rows: int  # canonical rows they gave (a tree gives many)
    dropped: dict[str, int]  # invalid rows by the reason of their first problem (data.on_invalid=drop)
    valid: int  # = rows - sum(dropped) = train + eval
    train: int
    eval: int
    truncated_train: int = 0
    truncated_eval: int = 0
    trained: int | None = None
    evaluated: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Splits:
    """Validated canonical rows, split, and (with an encoder) the trainer's features of each."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    kind: str
    source: str
    ledger: Ledger
    train_features: list[dict[str, Any]] | None = None
    eval_features: list[dict[str, Any]] | None = None
    conversational: bool = False

    @property
    def dropped(self) -> dict[str, int]:
        return self.ledger.dropped

    @property
    def n_raw(self) -> int:
        return self.ledger.read


@dataclass
class Prepared:
    """Every converted row with its problems, before anything is dropped."""

    items: list[Item]
    n_raw: int
    conversational: bool = False
    plain_rows_with_template: int = 0  # plain-text rows although the tokenizer has a chat template
    encoded: dict[int, Any] = field(default_factory=dict)  # item index -> rlhf.data.encode.Encoded


def prepare(cfg: DataConfig, tokenizer: Any = None) -> Prepared:
    """Read, convert and schema-check every row, flag duplicates; problems are attached, not raised."""
    raw = read_source(cfg.source, cfg.hf_split, cfg.max_rows)
    if not raw:
        raise UserError(f"data.source: {cfg.source} has no rows")
    template = tokenizer is not None and has_template(tokenizer)
    dialogue_as_turns = cfg.conversational is True or (cfg.conversational == "auto" and template)
    convert = PRESETS[cfg.format]
    items: list[Item] = []
    for origin, record in raw:
        try:
            if isinstance(record, RowError):
                raise record
            rows = convert(record, conversational=dialogue_as_turns, kind=cfg.kind)
        except RowError as e:
            items.append(Item(origin, None, [e.problem]))
            continue
        for row in rows:
            clean, problems = normalize(row, cfg.kind, conversational=cfg.conversational is True)
            items.append(Item(origin, clean, problems))
    if cfg.dedupe:
        mark_duplicates(items)
    conv = [is_conversational(it.row) for it in items if it.ok]
    plain_with_template = sum(1 for c in conv if not c) if template else 0
    return Prepared(items, len(raw), any(conv), plain_with_template)


def encode_items(prepared: Prepared, encoder: Encoder, source: str) -> None:
    """Encode every valid row; a row the encoder refuses gets its problem (e.g. truncated_empty)."""
    valid = [i for i, item in enumerate(prepared.items) if item.ok]
    rows = [prepared.items[i].row for i in valid]
    require_template(rows, encoder.tok, source)
    for i, enc in zip(valid, encoder.encode(rows), strict=True):
        if enc.problem is not None:
            prepared.items[i].problems.append(enc.problem)
        else:
            prepared.encoded[i] = enc


def load_splits(cfg: DataConfig, encoder: Encoder | None = None, tokenizer: Any = None) -> Splits:
    """Validated train/eval rows; raises one UserError for all bad rows unless cfg.on_invalid == "drop".

    With `encoder` (built on the tokenizer and max_length the trainer uses) every valid row is
    encoded, rows the trainer could not learn from are invalid too, and `train_features` /
    `eval_features` hold what the trainer is to be given."""
    prepared = prepare(cfg, tokenizer if tokenizer is not None else getattr(encoder, "tok", None))
    if encoder is not None:
        encode_items(prepared, encoder, cfg.source)
    items = prepared.items
    if cfg.on_invalid == "error" and any(item.problems for item in items):
        raise invalid_error(items, cfg.source)
    good = [i for i, item in enumerate(items) if item.ok]
    if not good:
        raise UserError(f"data.source: {cfg.source}: no valid rows left after dropping invalid ones")
    train_idx, eval_idx = split_indices([row_key(items[i].row) for i in good], cfg.eval_fraction, cfg.eval_rows,
                                        cfg.seed)
    train, evals = [good[i] for i in train_idx], [good[i] for i in eval_idx]
    enc = prepared.encoded
    ledger = Ledger(
        read=prepared.n_raw, rows=len(items), dropped=reason_counts(items), valid=len(good),
        train=len(train), eval=len(evals),
        truncated_train=sum(1 for i in train if i in enc and enc[i].truncated),
        truncated_eval=sum(1 for i in evals if i in enc and enc[i].truncated),
    )
    return Splits(
        train=[items[i].row for i in train], eval=[items[i].row for i in evals], kind=cfg.kind, source=cfg.source,
        ledger=ledger, conversational=prepared.conversational,
        train_features=[enc[i].features for i in train] if encoder is not None else None,
        eval_features=[enc[i].features for i in evals] if encoder is not None else None,
    )


__all__ = ["Ledger", "Prepared", "Splits", "encode_items", "load_splits", "prepare", "valid_rows"]
