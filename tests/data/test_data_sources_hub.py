"""The `datasets` ways to name data: save_to_disk folders, a configuration (subset), data_files,
revision, a column mapping, and a dataset's own split as the eval split, each on real small files."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlhf.data import DataConfig, load_splits, preflight
from rlhf.errors import UserError

PAIRS = [{"prompt": f"Q{i}?", "chosen": f" yes {i}", "rejected": f" no {i}"} for i in range(12)]
TEST = [{"prompt": f"T{i}?", "chosen": f" sure {i}", "rejected": f" nope {i}"} for i in range(4)]
QA = [{"question": f"What is {i}?", "answer": f" It is {i}.", "id": i} for i in range(6)]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")


def pairs(source, **kw):
    return DataConfig(kind="pair", source=str(source), format="canonical", **kw)


@pytest.fixture
def saved_dict(tmp_path):
    """A DatasetDict (train + test) written by save_to_disk."""
    from datasets import Dataset, DatasetDict

    path = tmp_path / "saved_dict"
    DatasetDict({"train": Dataset.from_list(PAIRS), "test": Dataset.from_list(TEST)}).save_to_disk(str(path))
    return path


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def configs_folder(tmp_path):
    """A local dataset folder whose README declares two configurations (the hub's "subsets")."""
    root = tmp_path / "qa"
    _write(root / "easy" / "train.jsonl", QA[:4])
    _write(root / "easy" / "test.jsonl", QA[4:])
    _write(root / "hard" / "part-0.jsonl", [{"question": "Why?", "answer": " Because."}])
    _write(root / "hard" / "part-1.jsonl", [{"question": "How?", "answer": " Like so."}])
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: easy\n  default: true\n  data_files:\n  - split: train\n    path: easy/train.jsonl\n"
        "  - split: test\n    path: easy/test.jsonl\n- config_name: hard\n  data_files:\n  - split: train\n"
        "    path: hard/*.jsonl\n---\n")
    return root


def test_save_to_disk_folders_are_sources(tmp_path, saved_dict):
    from datasets import Dataset

    Dataset.from_list(PAIRS).save_to_disk(str(tmp_path / "saved"))
    assert load_splits(pairs(tmp_path / "saved", eval_fraction=0)).train == PAIRS
    assert load_splits(pairs(saved_dict, eval_fraction=0)).train == PAIRS  # hf_split: train
    assert load_splits(pairs(saved_dict, eval_fraction=0, hf_split="test")).train == TEST
    with pytest.raises(UserError, match=r"has no split 'tset'; its splits: train, test \(did you mean `test`\?\)"):
        load_splits(pairs(saved_dict, hf_split="tset"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match=r"is a directory, but not one written by datasets' save_to_disk.*hf:"):
        load_splits(pairs(tmp_path / "plain"))


def test_bad_rows_of_a_saved_folder_are_named_by_split_and_row(tmp_path):
    from datasets import Dataset, DatasetDict

    bad = PAIRS[:2] + [{"prompt": "Q", "chosen": " same", "rejected": " same"}]
    DatasetDict({"train": Dataset.from_list(bad)}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(UserError, match=r"bad\[train\]:row 3: rejected: identical to chosen"):
        load_splits(pairs(tmp_path / "bad"))


def test_eval_split_is_the_datasets_own_split(saved_dict, tokenizer):
    from rlhf.data import RewardEncoder

    splits = load_splits(pairs(saved_dict, eval_split="test"), RewardEncoder(tokenizer, 64))
    assert splits.train == PAIRS and splits.eval == TEST  # every train row trains: no fraction is held out
    led = splits.ledger
    assert (led.read, led.rows, led.valid, led.train, led.eval) == (16, 16, 16, 12, 4)
    assert len(splits.train_features) == 12 and len(splits.eval_features) == 4
    report = preflight(pairs(saved_dict, eval_split="test"))
    assert (report["split"]["train"], report["split"]["eval"]) == (12, 4) and report["rows_read"] == 16


def test_an_eval_row_that_repeats_a_train_row_is_a_duplicate(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(PAIRS), "test": Dataset.from_list([PAIRS[3], *TEST])}).save_to_disk(
        str(tmp_path / "leaky"))
    with pytest.raises(UserError, match=r"leaky\[test\]:row 1: row: exact duplicate of leaky\[train\]:row 4"):
        load_splits(pairs(tmp_path / "leaky", eval_split="test"))
    splits = load_splits(pairs(tmp_path / "leaky", eval_split="test", on_invalid="drop"))
    assert splits.eval == TEST and splits.dropped == {"duplicate": 1}


def test_eval_split_refusals(tmp_path, saved_dict, write_jsonl):
    from datasets import Dataset

    with pytest.raises(UserError) as e:
        pairs(write_jsonl(PAIRS), eval_split="test", eval_rows=3)
    assert "is one file without splits" in e.value.message and "data.eval_rows: the eval rows are" in e.value.message
    with pytest.raises(UserError, match="data.eval_split: 'train' is also data.hf_split"):
        pairs(saved_dict, eval_split="train")
    Dataset.from_list(PAIRS).save_to_disk(str(tmp_path / "one"))
    with pytest.raises(UserError, match="holds one dataset without splits"):
        load_splits(pairs(tmp_path / "one", eval_split="test"))
    with pytest.raises(UserError, match=r"has no split 'validation'"):
        load_splits(pairs(saved_dict, eval_split="validation"))


def test_hf_config_picks_the_subset_and_columns_rename(configs_folder):
    sft = {"kind": "sft", "format": "canonical", "columns": {"question": "prompt", "answer": "completion"}}
    easy = load_splits(DataConfig(source=f"hf:{configs_folder}", eval_split="test", **sft))
    assert easy.train == [{"prompt": r["question"], "completion": r["answer"]} for r in QA[:4]]
    assert easy.eval == [{"prompt": r["question"], "completion": r["answer"]} for r in QA[4:]]
    hard = load_splits(DataConfig(source=f"hf:{configs_folder}", hf_config="hard", eval_fraction=0, **sft))
    assert sorted(r["prompt"] for r in hard.train) == ["How?", "Why?"]
    with pytest.raises(UserError, match=r"\(split 'train', config 'medium'\) cannot be loaded.*'medium' not found"):
        load_splits(DataConfig(source=f"hf:{configs_folder}", hf_config="medium", **sft))


def test_data_files_choose_the_files(tmp_path, write_jsonl):
    a, b = write_jsonl(PAIRS[:6], "a.jsonl"), write_jsonl(PAIRS[6:], "b.jsonl")
    both = load_splits(pairs("hf:json", data_files=[str(a), str(b)], eval_fraction=0))
    assert both.train == PAIRS
    by_split = load_splits(pairs("hf:json", data_files={"train": str(a), "test": str(b)}, eval_split="test"))
    assert by_split.train == PAIRS[:6] and by_split.eval == PAIRS[6:]


def test_hub_only_options_are_refused_for_files_and_revision_reaches_load_dataset(write_jsonl):
    with pytest.raises(UserError) as e:
        pairs(write_jsonl(PAIRS), revision="v1.0", hf_config="en", data_files="x.jsonl")
    for name, arg in (("revision", "revision"), ("hf_config", "name"), ("data_files", "data_files")):
        assert f"data.{name}: only for hf:<dataset> sources (load_dataset's `{arg}`)" in e.value.message
    # offline, a hub dataset cannot be fetched: the one error names the revision asked for
    with pytest.raises(UserError, match=r"hf:acme/pairs \(split 'train', revision 'v1.0'\) cannot be loaded"):
        load_splits(pairs("hf:acme/pairs", revision="v1.0"))


def test_columns_on_parquet_and_jsonl_before_the_preset(tmp_path, write_jsonl):
    pq.write_table(pa.Table.from_pylist(QA), tmp_path / "qa.parquet")
    mapping = {"question": "prompt", "answer": "completion"}
    want = [{"prompt": r["question"], "completion": r["answer"]} for r in QA]
    for path in (tmp_path / "qa.parquet", write_jsonl(QA, "qa.jsonl")):
        cfg = DataConfig(kind="sft", source=str(path), format="canonical", columns=mapping, eval_fraction=0)
        assert load_splits(cfg).train == want
    stories = write_jsonl([{"story": "Once there was a cat. It sat."}], "s.jsonl")
    cfg = DataConfig(kind="sft", source=str(stories), format="tinystories", columns={"story": "text"}, eval_fraction=0)
    assert load_splits(cfg).train == [{"prompt": "Once there was a cat.", "completion": " It sat."}]


def test_column_mapping_mistakes(tmp_path, write_jsonl):
    pq.write_table(pa.Table.from_pylist(QA), tmp_path / "qa.parquet")
    parquet = str(tmp_path / "qa.parquet")
    with pytest.raises(UserError, match=r"data.columns: qa.parquet has no column 'questoin' \(its columns: question, "):
        load_splits(DataConfig(kind="sft", source=parquet, format="canonical", columns={"questoin": "prompt"}))
    with pytest.raises(UserError, match=r"already has a column 'id'"):
        load_splits(DataConfig(kind="sft", source=parquet, format="canonical", columns={"question": "id"}))
    rows = [{"question": "Q?", "prompt": "P?", "completion": " c"}]
    with pytest.raises(UserError, match=r"c.jsonl:1: prompt: data.columns maps another field to 'prompt'"):
        load_splits(DataConfig(kind="sft", source=str(write_jsonl(rows, "c.jsonl")), format="canonical",
                               columns={"question": "prompt"}))
    with pytest.raises(UserError, match="data.columns: q and question all map to 'prompt'"):
        DataConfig(kind="sft", source=parquet, format="canonical", columns={"q": "prompt", "question": "prompt"})


def test_new_keys_are_checked_with_a_did_you_mean():
    with pytest.raises(UserError) as e:
        DataConfig.from_mapping({"kind": "sft", "source": "hf:x", "format": "canonical", "colums": {"a": "b"},
                                 "eval_splt": "test"})
    assert "data.colums: unknown key (did you mean `columns`?)" in e.value.message
    assert "data.eval_splt: unknown key (did you mean `eval_split`?)" in e.value.message
    with pytest.raises(UserError) as e:
        DataConfig(kind="sft", source="hf:x", format="canonical", columns=["a"], data_files={"train": 3},
                   hf_config="", revision=7)
    msg = e.value.message
    for needle in ("data.columns: expected a mapping", "data.data_files: expected a path or glob",
                   "data.hf_config: expected null or a configuration name", "data.revision: expected null or a branch"):
        assert needle in msg


def test_rlhf_check_on_a_saved_folder_with_its_test_split_and_a_column_mapping(cli, tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(QA[:4]), "test": Dataset.from_list(QA[4:])}).save_to_disk(
        str(tmp_path / "qa"))
    res = cli("check", "stage=sft", "data=jsonl", "data.kind=sft", f"data.source={tmp_path / 'qa'}",
              "data.eval_split=test", "data.columns={question: prompt, answer: completion}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "read 6 records -> 6 rows: 6 valid (train 4, eval 2), 0 invalid" in res.stdout
