"""Token counts for validation and preflight: batched through the fast tokenizer, no per-token loops.

`truncated_empty` asks one question per row: once truncated to max_length, is anything left that
the trainer can learn from? The answer depends on which end is cut:
- sft (right truncation, the end is lost): the completion is gone when the prompt alone fills
  max_length (for `messages`: the turns before the first assistant turn). Text rows always keep
  something. Left truncation keeps the completion's end, so it never empties an sft row.
- pair / ranked (either side): prompt + response is truncated as one sequence; the row carries no
  preference when chosen and rejected (or all K responses) become token-identical.
Counts use the tokenizer's own special tokens (`add_special_tokens=True`) but not a chat template
around prompt/completion rows, so they can undercount by the few tokens a trainer adds (e.g. EOS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .rows import Problem

Row = dict[str, Any]


def full_texts(row: Row, kind: str, tokenizer: Any) -> list[str]:
    """The sequences a trainer would see for this row: one for sft, one per response otherwise."""
    if kind == "pair":
        return [row["prompt"] + row["chosen"], row["prompt"] + row["rejected"]]
    if kind == "ranked":
        return [row["prompt"] + r for r in row["responses"]]
    if "messages" in row:
        return [render_messages(row["messages"], tokenizer)]
    if "text" in row:
        return [row["text"]]
    return [row["prompt"] + row["completion"]]


def render_messages(messages: list[dict[str, str]], tokenizer: Any) -> str:
    """The tokenizer's chat template when it has one, else a plain "role: content" transcript."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


@dataclass
class Encoded:
    """Per row, the token count of each full text and, when max_length is given, the ids it keeps."""

    lengths: list[list[int]]
    kept: list[list[tuple[int, ...]]] | None = None


def encode(
    tokenizer: Any, texts: list[str], max_length: int | None = None, side: str = "right"
) -> tuple[list[int], list[tuple[int, ...]] | None]:
    """Token counts of many texts in one batched call, and the ids left after truncation to max_length.

    A fast tokenizer's Rust backend is called directly: it tokenizes in parallel and we never
    turn a whole sequence into a Python list (only the max_length ids that are kept).
    """
    if not texts:
        return [], [] if max_length is not None else None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.truncation is None and backend.padding is None:
        encodings = backend.encode_batch(texts, add_special_tokens=True)
        lengths = [len(e) for e in encodings]
        if max_length is None:
            return lengths, None
        for e in encodings:
            e.truncate(max_length, direction=side)
        return lengths, [tuple(e.ids) for e in encodings]
    ids = tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    kept = (
        None
        if max_length is None
        else [tuple(x[-max_length:] if side == "left" else x[:max_length]) for x in ids]
    )
    return [len(x) for x in ids], kept


def encode_rows(
    rows: list[Row], kind: str, tokenizer: Any, max_length: int | None = None, side: str = "right"
) -> Encoded:
    """Token counts (and kept ids) of every full text of every row (see `full_texts`)."""
    texts: list[str] = []
    owner: list[int] = []
    for i, row in enumerate(rows):
        row_texts = full_texts(row, kind, tokenizer)
        texts += row_texts
        owner += [i] * len(row_texts)
    lengths, kept = encode(tokenizer, texts, max_length, side)
    row_lengths: list[list[int]] = [[] for _ in rows]
    for i, n in zip(owner, lengths, strict=True):
        row_lengths[i].append(n)
    if kept is None:
        return Encoded(row_lengths)
    row_kept: list[list[tuple[int, ...]]] = [[] for _ in rows]
    for i, ids in zip(owner, kept, strict=True):
        row_kept[i].append(ids)
    return Encoded(row_lengths, row_kept)


def truncation_problems(
    rows: list[Row],
    kind: str,
    tokenizer: Any,
    max_length: int,
    side: str,
    encoded: Encoded | None = None,
) -> dict[int, Problem]:
    """Index -> `truncated_empty` problem for each row with nothing left to learn after truncation.

    `encoded` (from `encode_rows` with the same max_length and side) saves tokenizing twice.
    """
    if side not in ("left", "right"):
        raise ValueError(f"truncation_side must be 'left' or 'right', got {side!r}")
    out: dict[int, Problem] = {}
    if kind == "sft":
        if side == "left":
            return out
        prefixes = [(i, _trained_prefix(row, tokenizer)) for i, row in enumerate(rows)]
        prefixes = [(i, p) for i, p in prefixes if p is not None]
        lengths, _ = encode(tokenizer, [p for _, p in prefixes])
        for (i, _), n in zip(prefixes, lengths, strict=True):
            if n >= max_length:
                field = "messages" if "messages" in rows[i] else "completion"
                detail = (
                    f"nothing left to train on: the prompt alone is {n} tokens >= max_length {max_length}"
                )
                out[i] = Problem("truncated_empty", field, detail)
        return out
    if encoded is None or encoded.kept is None:
        encoded = encode_rows(rows, kind, tokenizer, max_length, side)
    for i, kept in enumerate(encoded.kept or []):
        if len(set(kept)) < 2:
            what = "chosen and rejected are" if kind == "pair" else "all responses are"
            field = "rejected" if kind == "pair" else "responses"
            detail = (
                f"{what} token-identical after {side}-truncating prompt+response to max_length {max_length}"
            )
            out[i] = Problem("truncated_empty", field, detail)
    return out


def _trained_prefix(row: Row, tokenizer: Any) -> str | None:
    """The text before the first trained token of an sft row, or None when every token is trained."""
    if "messages" in row:
        first = next(i for i, m in enumerate(row["messages"]) if m["role"] == "assistant")
        return render_messages(row["messages"][:first], tokenizer) if first else None
    return row.get("prompt")


def quantiles(lengths: list[int]) -> dict[str, int]:
    """p50 / p90 / p99 / max of token lengths (empty dict for no rows)."""
    if not lengths:
        return {}
    p50, p90, p99 = np.percentile(np.asarray(lengths), [50, 90, 99])
    return {"p50": int(round(p50)), "p90": int(round(p90)), "p99": int(round(p99)), "max": int(max(lengths))}
