"""Presets convert the real embedded files, and the edge cases of each format."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from rlhf.data import DataConfig, load_splits
from rlhf.data.presets import ASSISTANT, hh_rlhf, oasst_trees, tinystories
from rlhf.errors import UserError


def raw_lines(path):
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def test_tinystories_prompt_is_the_first_sentence(assets_dir):
    raw = raw_lines(assets_dir / "data/tinystories/stories.jsonl")
    for story in raw:
        (row,) = tinystories(story)
        assert row["prompt"] + row["completion"] == story["text"]
        assert row["prompt"][-1] in ".!?" and row["completion"][:1].isspace()
    assert tinystories({"text": "Hi! How are you? Fine."})[0] == {
        "prompt": "Hi!",
        "completion": " How are you? Fine.",
    }
    assert tinystories({"text": "Only one."})[0]["completion"] == ""


def test_tinystories_loads_and_a_one_sentence_story_is_invalid(assets_dir, write_jsonl):
    splits = load_splits(
        DataConfig(
            kind="sft", source=str(assets_dir / "data/tinystories/stories.jsonl"), format="tinystories"
        )
    )
    assert len(splits.train) + len(splits.eval) == 2000 and 70 <= len(splits.eval) <= 130  # ~5% of the openings
    with pytest.raises(UserError, match=r"t\.jsonl:1: completion: empty"):
        load_splits(
            DataConfig(
                kind="sft", source=str(write_jsonl([{"text": "The end."}], "t.jsonl")), format="tinystories"
            )
        )


def test_hh_rlhf_prompt_is_the_shared_dialogue(assets_dir):
    path = assets_dir / "data/hh-rlhf/harmless-base.jsonl"
    for raw in raw_lines(path):
        (row,) = hh_rlhf(raw)
        assert row["prompt"].endswith(ASSISTANT)
        assert row["prompt"] + row["chosen"] == raw["chosen"]
        assert row["prompt"] + row["rejected"] == raw["rejected"]
    splits = load_splits(DataConfig(kind="pair", source=str(path), format="hh_rlhf", on_invalid="drop"))
    assert splits.dropped == {"empty_text": 4}  # four pairs whose chosen turn is empty in the source
    assert len(splits.train) + len(splits.eval) == 1996
    assert splits.train[0]["chosen"].startswith(" ")


def test_hh_rlhf_when_the_last_turns_differ():
    raw = {
        "chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
        "rejected": "\n\nHuman: a\n\nAssistant: x",
    }
    assert hh_rlhf(raw)[0] == {
        "prompt": "\n\nHuman: a\n\nAssistant:",
        "chosen": " b\n\nHuman: c\n\nAssistant: d",
        "rejected": " x",
    }
    with pytest.raises(Exception, match="sharing a prefix"):
        hh_rlhf({"chosen": "\n\nHuman: a", "rejected": "\n\nHuman: b"})


def test_oasst_trees_give_ranked_rows(assets_dir):
    path = assets_dir / "data/oasst/en_trees.jsonl"
    rows = [row for raw in raw_lines(path) for row in oasst_trees(raw)]
    assert len(rows) == 167
    assert Counter(len(r["responses"]) for r in rows) == {2: 46, 3: 89, 4: 22, 5: 2, 6: 6, 8: 1, 9: 1}
    for r in rows:
        assert r["prompt"].startswith("\n\nHuman: ") and r["prompt"].endswith(ASSISTANT)
        assert all(isinstance(k, int) for k in r["ranks"]) and len(set(r["ranks"])) >= 2
    splits = load_splits(
        DataConfig(kind="ranked", source=str(path), format="oasst_trees", eval_fraction=0.15)
    )
    assert (len(splits.train) + len(splits.eval), splits.n_raw) == (167, 80) and 10 <= len(splits.eval) <= 40


def test_oasst_skips_deleted_unranked_and_prompter_rankings():
    def msg(role, text, rank=None, replies=(), deleted=False):
        return {"role": role, "text": text, "rank": rank, "deleted": deleted, "replies": list(replies)}

    follow_ups = [msg("prompter", "more?", 0), msg("prompter", "why?", 1)]  # ranked prompter turns: skipped
    tree = {
        "prompt": msg(
            "prompter",
            "Hi",
            replies=[
                msg("assistant", "Hello", 1, replies=follow_ups),
                msg("assistant", "Hey", 0),
                msg("assistant", "Yo", None),
                msg("assistant", "gone", 2, deleted=True),
            ],
        )
    }
    assert oasst_trees(tree) == [
        {"prompt": "\n\nHuman: Hi\n\nAssistant:", "responses": [" Hello", " Hey"], "ranks": [1, 0]}
    ]


def test_a_new_preset_is_one_function_and_one_entry(tmp_path, monkeypatch):
    """PRESETS is the one list: an entry makes the format accepted, its kinds checked, its rows converted."""
    from rlhf.data.presets import PRESETS, Preset

    def shouting(raw, conversational=False, kind="sft"):
        return [{"prompt": raw["q"], "completion": " " + raw["a"].upper()}]

    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps({"q": f"Question {i}?", "a": f"answer {i}"}) + "\n" for i in range(20)))
    with pytest.raises(UserError, match="data.format: 'shouting' is not one of"):
        DataConfig(kind="sft", source=str(src), format="shouting")
    monkeypatch.setitem(PRESETS, "shouting", Preset(shouting, ("sft",)))
    splits = load_splits(DataConfig(kind="sft", source=str(src), format="shouting", eval_rows=2))
    assert len(splits.train) == 18 and splits.train[0]["completion"].isupper()
    with pytest.raises(UserError, match="data.kind: format shouting produces sft rows, but kind is pair"):
        DataConfig(kind="pair", source=str(src), format="shouting")
