"""A seeded train/eval split that depends only on the rows' content and the seed.

Rows are ordered by a keyed hash of (seed, row) and the first n_eval go to eval. Unlike a
permutation of positions, a row keeps its side when other rows are dropped, added or reordered
(e.g. after a different max_length drops a few rows), so eval rows never leak into train between
two runs on the same file. Each split keeps the file order.
"""

from __future__ import annotations

import hashlib

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


def split_indices(
    keys: list[str], eval_fraction: float, eval_rows: int | None, seed: int
) -> tuple[list[int], list[int]]:
    """(train, eval) positions of `keys` (one canonical text per row), both in ascending order."""
    n_eval = eval_size(len(keys), eval_fraction, eval_rows)
    salt = f"{seed}\0".encode()

    def rank(i: int) -> tuple[bytes, int]:
        return hashlib.blake2b(salt + keys[i].encode(), digest_size=8).digest(), i

    order = sorted(range(len(keys)), key=rank)
    eval_idx = sorted(order[:n_eval])
    train_idx = sorted(order[n_eval:])
    return train_idx, eval_idx
