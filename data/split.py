"""A seeded train/eval split that depends only on the rows' content and the seed: by prompt, or by row.

`data.split_by=prompt` (the default): every row is keyed by its prompt (`prompt_key`: the `prompt`
field, a pair's extracted prompt, a conversation's turns before its last assistant turn, a text
row's first sentence as the TinyStories preset cuts it), normalised (Unicode NFKC, case-folded,
whitespace collapsed). A prompt goes to eval when its keyed hash, read as a number u in [0, 1),
is below `eval_fraction`, so:
- rows that share a prompt are on one side (several pairs or samples of one prompt never straddle);
- a prompt's side depends on (prompt, seed, fraction) only, not on the other rows: every stage of
  a pipeline that reads a prompt with the same seed and fraction puts it on the same side, and a
  prompt held out at fraction f is held out at every fraction >= f. An aligner evaluated on its
  SFT data's held-out prompts is therefore never evaluated on a prompt its SFT, its reward model
  (trained on samples of the SFT's training prompts) or its own training saw.
The eval share is then binomial around `eval_fraction` (of prompts, not rows). With so few
prompts that no u falls below the fraction, the prompt with the smallest u is held out (and when
every prompt would be, the largest goes to train), so a small file still gets both sides.
`data.eval_rows` takes whole prompts in ascending u while at most that many rows are held out
(exactly that many when prompts are distinct; at least one prompt).

`data.split_by=row`: rows are ordered by a keyed hash of the whole row and the first n_eval go to
eval (the earlier behaviour; rows that share a prompt can land on both sides).
Either way a row keeps its side when other rows are dropped, added or reordered, and each split
keeps the file order.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

import numpy as np

from rlhf.errors import UserError

SPLIT_BY = ("prompt", "row")
_SENTENCE_END = re.compile(r"[.!?](?=\s)")  # the TinyStories preset's sentence end (data.presets)
_TURN = re.compile(r"\n\n(Human|Assistant):")  # an Anthropic-style transcript (HH-RLHF, OASST presets)


def eval_size(n: int, eval_fraction: float, eval_rows: int | None) -> int:
    """How many of n rows go to eval: eval_rows if set, else round(n * fraction), >= 1 when fraction > 0."""
    if eval_rows is not None:
        if n and eval_rows >= n:
            raise UserError(f"data.eval_rows: {eval_rows} leaves no training rows: only {n} valid rows")
        return eval_rows
    if eval_fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * eval_fraction)))


def split_hash(key: str, seed: int) -> int:
    """A row's place in the split order: the first 8 bytes of BLAKE2b(seed, key), as an unsigned int."""
    digest = hashlib.blake2b(f"{seed}\0".encode() + key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


def _turns_key(turns: list[dict[str, Any]]) -> str:
    """Turns as one text: a lone user turn is its content (so it keys like the same plain prompt)."""
    if len(turns) == 1 and turns[0].get("role") == "user":
        return _norm(str(turns[0].get("content", "")))
    return "\n".join(f"{m.get('role')}: {_norm(str(m.get('content', '')))}" for m in turns)


def _text_key(text: str) -> str:
    """A plain prompt; an HH-style transcript keys like its turns (plain and conversational rows agree)."""
    if "Human:" in text and (text.lstrip().startswith("Human:") or _TURN.search(text)):
        parts = _TURN.split("\n\n" + text.lstrip() if not text.startswith("\n\n") else text)
        turns = [{"role": "user" if who == "Human" else "assistant", "content": body.strip()}
                 for who, body in zip(parts[1::2], parts[2::2], strict=False)]
        if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
            turns.pop()  # the empty "Assistant:" a prompt ends with
        if turns:
            return _turns_key(turns)
    return _norm(text)


def prompt_key(row: dict[str, Any]) -> str:
    """The normalised prompt of a canonical row of any kind (see the module docstring)."""
    if "prompt" in row:
        p = row["prompt"]
        return _text_key(p) if isinstance(p, str) else _turns_key(p)
    if "messages" in row:
        messages = row["messages"]
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=len(messages))
        return _turns_key(messages[:last])
    if "text" in row:  # the TinyStories cut: a story's opening is its prompt wherever it appears
        text = row["text"]
        end = _SENTENCE_END.search(text)
        return _norm(text[: end.end()] if end else text)
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def eval_mask(hashes: np.ndarray, eval_fraction: float, eval_rows: int | None) -> np.ndarray:
    """By row: True for the n_eval rows with the smallest `split_hash`es (ties: the earlier row)."""
    n_eval = eval_size(len(hashes), eval_fraction, eval_rows)
    mask = np.zeros(len(hashes), dtype=bool)
    mask[np.argsort(hashes, kind="stable")[:n_eval]] = True
    return mask


def prompt_eval_mask(hashes: np.ndarray, eval_fraction: float, eval_rows: int | None) -> np.ndarray:
    """By prompt: True for the rows whose prompt hash (one per row) is held out (module docstring)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if n < 2 or (eval_rows is None and eval_fraction <= 0) or eval_rows == 0:
        return np.zeros(n, dtype=bool)
    eval_size(n, eval_fraction, eval_rows)  # refuses an eval_rows that leaves no training rows
    prompts, counts = np.unique(hashes, return_counts=True)  # ascending hash = ascending u
    if len(prompts) < 2:
        return np.zeros(n, dtype=bool)
    if eval_rows is not None:
        k = int(np.searchsorted(np.cumsum(counts), eval_rows, side="right"))  # whole prompts, <= eval_rows rows
    else:
        k = int(np.searchsorted(prompts, np.uint64(int(eval_fraction * 2.0**64)), side="left"))  # u < fraction
    held = prompts[: min(max(k, 1), len(prompts) - 1)]
    return np.isin(hashes, held)


def split_indices(
    keys: list[str], eval_fraction: float, eval_rows: int | None, seed: int
) -> tuple[list[int], list[int]]:
    """(train, eval) positions of `keys` (one canonical text per row), both in ascending order."""
    mask = eval_mask(np.array([split_hash(k, seed) for k in keys], dtype=np.uint64), eval_fraction, eval_rows)
    return np.flatnonzero(~mask).tolist(), np.flatnonzero(mask).tolist()
