"""Preflight on the real HH pairs: counts, token quantiles, and a readable report."""

from __future__ import annotations

import json

import pytest

from rlhf.data import DataConfig, RewardEncoder, format_preflight, preflight
from rlhf.errors import UserError


@pytest.fixture(scope="module")
def hh_report(assets_dir, tokenizer):
    cfg = DataConfig(
        kind="pair",
        source=str(assets_dir / "data/hh-rlhf/harmless-base.jsonl"),
        format="hh_rlhf",
        eval_fraction=0.1,
    )
    return preflight(cfg, RewardEncoder(tokenizer, 256))


def test_hh_counts(hh_report):
    r = hh_report
    assert (r["rows_read"], r["rows"], r["valid"]) == (2000, 2000, 1996)
    split = r["split"]  # by prompt: about 10% of the distinct prompts, none on both sides
    assert split["train"] + split["eval"] == 1996 and 150 <= split["eval"] <= 250 and split["by"] == "prompt"
    assert split["prompts_shared"] == 0 and split["prompts_eval"] <= split["eval"]
    assert r["invalid"]["by_reason"] == {"empty_text": 4}
    assert (
        r["invalid"]["examples"]["empty_text"][0]
        == "harmless-base.jsonl:76: chosen: empty (expected non-blank text)"
    )
    assert r["duplicates"] == 0
    assert 0 <= r["pairs"]["near_identical_share"] < 0.05
    json.dumps(r)


def test_hh_token_quantiles(hh_report):
    t = hh_report["tokens"]
    q = t["full_text"]
    assert 50 < q["p50"] <= q["p90"] <= q["p99"] <= q["max"]
    assert "prompt loses its start" in t["rule"] and 0.3 < t["truncated_share"] < 1


def test_format_preflight_is_readable(hh_report):
    text = format_preflight(hh_report)
    split = hh_report["split"]
    assert f"1996 valid (train {split['train']}, eval {split['eval']}), 4 invalid" in text
    assert f"split by prompt: distinct prompts train {split['prompts_train']}, eval {split['prompts_eval']}, " \
           "on both sides 0" in text
    assert "harmless-base.jsonl:76: chosen: empty" in text
    assert "rows longer than max_length 256" in text and "p50" in text


def test_preflight_reports_bad_rows_but_raises_for_a_missing_file(write_jsonl, tmp_path):
    rows = [
        {"prompt": "Q", "chosen": " a", "rejected": " a"},
        {"prompt": "Q", "chosen": " a", "rejected": " b"},
    ]
    report = preflight(DataConfig(kind="pair", source=str(write_jsonl(rows)), format="canonical"))
    assert report["invalid"]["by_reason"] == {"chosen_equals_rejected": 1} and report["tokens"] is None
    assert {k: report["split"][k] for k in ("train", "eval")} == {"train": 1, "eval": 0}
    assert "chosen_equals_rejected: 1 rows" in format_preflight(report)
    with pytest.raises(UserError, match="does not exist"):
        preflight(DataConfig(kind="pair", source=str(tmp_path / "missing.jsonl"), format="canonical"))


def test_shares_over_zero_valid_rows_are_undefined_not_zero(tmp_path, tokenizer):
    """Every row invalid: the shares over valid rows are null in the report ("n/a" in the text), not a
    made-up 0.0 that reads as "no pair near-identical, nothing truncated"."""
    src = tmp_path / "bad.jsonl"
    src.write_text("".join(json.dumps({"prompt": "p", "chosen": "", "rejected": "x"}) + "\n" for _ in range(3)))
    r = preflight(DataConfig(kind="pair", source=str(src), format="canonical", eval_fraction=0.0), RewardEncoder(tokenizer, 64))
    assert r["valid"] == 0 and r["invalid"]["total"] == 3
    assert r["pairs"]["near_identical_share"] is None and r["tokens"]["truncated_share"] is None
    text = format_preflight(r)
    assert "n/a (no rows)" in text and "0.0%" not in text
    json.dumps(r)
