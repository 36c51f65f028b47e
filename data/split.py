"""A seeded train/eval split that depends only on the rows' content and the seed.

Rows are ordered by a keyed hash of (seed, row) and the first n_eval go to eval. Unlike a
permutation of positions, a row keeps its side when other rows are dropped, added or reordered
(e.g. after a different max_length drops a few rows), so eval rows never leak into train between
two runs on the same file. Each split keeps the file order.
"""

from __future__ import annotations

import hashlib

import numpy as np

from rlhf.errors import UserError


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
    """A row's place in the split order: the first 8 bytes of BLAKE2b(seed, row), as an unsigned int."""
    digest = hashlib.blake2b(f"{seed}\0".encode() + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def eval_mask(hashes: np.ndarray, eval_fraction: float, eval_rows: int | None) -> np.ndarray:
    """True for the rows that go to eval: the n_eval smallest `split_hash`es (ties: the earlier row)."""
    n_eval = eval_size(len(hashes), eval_fraction, eval_rows)
    mask = np.zeros(len(hashes), dtype=bool)
    mask[np.argsort(hashes, kind="stable")[:n_eval]] = True
    return mask


def split_indices(
    keys: list[str], eval_fraction: float, eval_rows: int | None, seed: int
) -> tuple[list[int], list[int]]:
    """(train, eval) positions of `keys` (one canonical text per row), both in ascending order."""
    mask = eval_mask(np.array([split_hash(k, seed) for k in keys], dtype=np.uint64), eval_fraction, eval_rows)
    return np.flatnonzero(~mask).tolist(), np.flatnonzero(mask).tolist()
