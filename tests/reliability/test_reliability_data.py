"""Unreadable data is named precisely, and a line that is not UTF-8 is a bad row like any other:
data.on_invalid=drop drops it."""

from __future__ import annotations

import pytest
from reliability_harness import CASES

from rlhf.data import DataConfig, load_splits
from rlhf.errors import UserError


def test_a_latin1_line_is_named_and_can_be_dropped():
    cfg = dict(kind="sft", source=str(CASES / "d04_latin1.jsonl"), format="canonical", eval_fraction=0.0)
    with pytest.raises(UserError) as e:
        load_splits(DataConfig(**cfg))
    assert "d04_latin1.jsonl:10: not valid UTF-8 (byte 0xe9" in e.value.message
    splits = load_splits(DataConfig(**cfg, on_invalid="drop"))
    assert splits.dropped == {"unparsable": 1} and len(splits.train) == 29


def test_a_file_named_gz_that_is_not_gzip_says_so():
    with pytest.raises(UserError, match=r"d25_not_gzip.jsonl.gz: not a readable gzip file .*name it .jsonl"):
        load_splits(DataConfig(kind="sft", source=str(CASES / "d25_not_gzip.jsonl.gz"), format="canonical"))


def test_a_leading_byte_order_mark_is_not_an_error(tmp_path):
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"text": "Once upon a time."}\n{"text": "The end."}\n')
    splits = load_splits(DataConfig(kind="sft", source=str(f), format="canonical", eval_fraction=0.0))
    assert len(splits.train) == 2
