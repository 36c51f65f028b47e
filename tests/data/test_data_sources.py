"""Sources: .jsonl(.gz), .json and .parquet load the same rows; max_rows caps what is read."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlhf.data import DataConfig, load_splits
from rlhf.errors import UserError

ROWS = [{"prompt": f"Q{i}?", "chosen": f" yes {i}", "rejected": f" no {i}"} for i in range(10)]


def load(path, **kw):
    splits = load_splits(DataConfig(kind="pair", source=str(path), format="canonical", eval_fraction=0, **kw))
    return splits.train


def test_json_parquet_and_gz_give_the_same_rows(tmp_path, write_jsonl):
    (tmp_path / "rows.json").write_text(json.dumps(ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "rows.parquet")
    with gzip.open(tmp_path / "rows.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in ROWS))
    for name in ("rows.json", "rows.parquet", "rows.jsonl.gz"):
        assert load(tmp_path / name) == ROWS
    assert load(write_jsonl(ROWS)) == ROWS


def test_max_rows_caps_raw_rows(tmp_path, write_jsonl):
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "rows.parquet")
    assert load(write_jsonl(ROWS), max_rows=3) == ROWS[:3]
    assert load(tmp_path / "rows.parquet", max_rows=4) == ROWS[:4]


def test_blank_lines_are_skipped_and_numbering_follows_the_file(write_jsonl):
    path = write_jsonl([ROWS[0], "", "   ", {"prompt": "Q"}], "b.jsonl")
    with pytest.raises(UserError, match=r"b\.jsonl:4: chosen: missing"):
        load(path)


def test_json_record_numbers_and_bad_files(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps([ROWS[0], {"prompt": "Q"}]))
    with pytest.raises(UserError, match=r"r\.json:row 2: chosen: missing"):
        load(tmp_path / "r.json")
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in ROWS))
    with pytest.raises(UserError, match="name the file .jsonl"):
        load(tmp_path / "lines.json")
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="unsupported file type"):
        load(tmp_path / "rows.csv")


def test_hf_source_through_datasets(tmp_path, write_jsonl, monkeypatch):
    """hf:<name> goes through datasets.load_dataset; a local dataset folder keeps the test offline."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "ds"
    folder.mkdir()
    write_jsonl(ROWS, "ds/train.jsonl")
    assert load(f"hf:{folder}", max_rows=3) == ROWS[:3]
    with pytest.raises(UserError, match=r"hf:.*\(split 'test'\) cannot be loaded"):
        load(f"hf:{folder}", hf_split="test")
