"""The split is seeded, deterministic, disjoint, and follows rows, not positions."""

from __future__ import annotations

import random

import pytest

from rlhf.data import DataConfig, load_splits
from rlhf.data.split import eval_size
from rlhf.errors import UserError

ROWS = [{"text": f"Story number {i}."} for i in range(200)]


def splits_of(path, **kw):
    return load_splits(DataConfig(kind="sft", source=str(path), format="canonical", **kw))


def test_deterministic_disjoint_and_complete(write_jsonl):
    path = write_jsonl(ROWS)
    a, b = splits_of(path, eval_fraction=0.1), splits_of(path, eval_fraction=0.1)
    # by prompt (the default) each prompt is held out with probability 0.1: about 20 of 200
    assert a.train == b.train and a.eval == b.eval and 10 <= len(a.eval) <= 30
    assert len(splits_of(path, eval_fraction=0.1, split_by="row").eval) == 20  # by row: exactly round(n * f)
    texts = [r["text"] for r in a.train + a.eval]
    assert sorted(texts) == sorted(r["text"] for r in ROWS)
    assert a.train == [r for r in ROWS if r in a.train]  # each split keeps the file order
    assert splits_of(path, eval_fraction=0.1, seed=1).eval != a.eval


def test_same_rows_in_another_order_give_the_same_eval_rows(write_jsonl):
    shuffled = ROWS[:]
    random.Random(0).shuffle(shuffled)
    a = splits_of(write_jsonl(ROWS, "a.jsonl"), eval_fraction=0.1)
    b = splits_of(write_jsonl(shuffled, "b.jsonl"), eval_fraction=0.1)
    assert sorted(r["text"] for r in a.eval) == sorted(r["text"] for r in b.eval)


def test_eval_rows_overrides_the_fraction(write_jsonl):
    assert len(splits_of(write_jsonl(ROWS), eval_fraction=0.5, eval_rows=7).eval) == 7
    with pytest.raises(UserError, match="data.eval_rows: 200 leaves no training rows"):
        splits_of(write_jsonl(ROWS), eval_rows=200)


def test_eval_is_never_empty_when_asked_for():
    assert eval_size(2, 0.01, None) == 1
    assert eval_size(1, 0.5, None) == 0
    assert eval_size(100, 0.0, None) == 0
    assert eval_size(10, 0.99, None) == 9
