"""Unpaired preference rows (KTO): TRL's ``{"prompt", "completion", "label": bool}`` format.

A thumbs-up (`label: true`, desirable) or thumbs-down (`label: false`, undesirable) on one response,
as KTO trains on (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization").
Text fields are strings or message lists, as for every kind (`rlhf.data.validate`).

Any preference source trains KTO: with `data.kind=unpaired`, a pair row becomes two unpaired rows
(chosen -> true, rejected -> false; TRL's `unpair_preference_dataset`), and a ranked row gives its
best-ranked responses `true` and its worst-ranked `false` (responses ranked in between are neither
clearly good nor clearly bad and are left out). The row ledger counts the rows after this split.

`UnpairedEncoder` tokenises them exactly as TRL 1.16's `KTOTrainer._prepare_dataset` does (EOS after
a plain-text completion; the completion starts where prompt and prompt + completion diverge) and cuts
prompt + completion at max_length from its end (its collator's keep_start): a prompt that fills
max_length is the row problem `truncated_empty` here, where TRL would silently filter the row out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from . import chat
from .encode import Encoded, Encoder, common_prefix, is_conversational
from .rows import Problem
from .validate import normalize

Row = dict[str, Any]


def _is_preference(row: Any) -> bool:
    return isinstance(row, dict) and "label" not in row and "completion" not in row and (
        ("chosen" in row and "rejected" in row) or "responses" in row)


def normalized(row: Row, kind: str, conversational: bool = False) -> Iterator[tuple[Row, list[Problem]]]:
    """`validate.normalize` of one source row, or, for `kind=unpaired` and a pair / ranked row, the
    unpaired rows it gives (each checked as an unpaired row). An invalid pair / ranked row is reported
    with its own problems (as that kind), once."""
    if kind != "unpaired" or not _is_preference(row):
        yield normalize(row, kind, conversational=conversational)
        return
    src_kind = "ranked" if "responses" in row else "pair"
    clean, problems = normalize(row, src_kind, conversational=conversational)
    if problems:
        yield clean, problems
        return
    if src_kind == "pair":
        labelled = [(clean["chosen"], True), (clean["rejected"], False)]
    else:
        best, worst = min(clean["ranks"]), max(clean["ranks"])
        labelled = [(resp, rank == best) for resp, rank in zip(clean["responses"], clean["ranks"], strict=True)
                    if rank in (best, worst)]
    for completion, label in labelled:
        yield normalize({"prompt": clean["prompt"], "completion": completion, "label": label}, "unpaired",
                        conversational=conversational)


def label_counts(rows: Sequence[Row]) -> tuple[int, int]:
    """(desirable, undesirable) rows."""
    yes = sum(1 for r in rows if r["label"])
    return yes, len(rows) - yes


class UnpairedEncoder(Encoder):
    """KTO rows -> ``{"prompt_ids", "completion_ids", "label"}`` as TRL's KTOTrainer builds them."""

    kinds = ("unpaired",)

    def __init__(self, tokenizer: Any, max_length: int):
        super().__init__(tokenizer, max_length)
        self.rule = (f"prompt + completion cut at the end to max_length {max_length} (TRL's KTO keep_start): "
                     "a prompt that fills max_length leaves nothing to train on")

    def encode(self, rows: Sequence[Row]) -> list[Encoded]:
        plain = [i for i, r in enumerate(rows) if not is_conversational(r)]
        p_ids = self._text_ids([rows[i]["prompt"] for i in plain])
        f_ids = self._text_ids([rows[i]["prompt"] + rows[i]["completion"] for i in plain])
        seqs = {i: (p, self._with_eos(f)) for i, p, f in zip(plain, p_ids, f_ids, strict=True)}
        return [self._one(*seqs[i], row["label"]) if i in seqs else self._guard(self._conversation, row)
                for i, row in enumerate(rows)]

    def _conversation(self, row: Row) -> Encoded:
        prompt = row["prompt"]
        return self._one(chat.ids(self.tok, prompt, add_generation_prompt=True),
                         chat.ids(self.tok, prompt + row["completion"]), row["label"])

    def _one(self, prompt: list[int], full: list[int], label: bool) -> Encoded:
        m = self.max_length
        n = common_prefix(prompt, full)
        if n >= m:
            return self._empty("prompt", f"the prompt alone is {n} tokens >= max_length {m}: KTO keeps the start "
                                         "of prompt + completion, so nothing of the completion would be trained")
        if n == len(full):
            return self._empty("completion", "no completion token after the prompt")
        feats = {"prompt_ids": full[:n], "completion_ids": full[n:m], "label": bool(label)}
        return Encoded(feats, [len(full)], len(full) > m, tokens=min(len(full), m))
