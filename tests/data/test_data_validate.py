"""Every validation case gives one clear message naming file, line and field."""

from __future__ import annotations

import pytest

from rlhf.data import DataConfig, load_splits
from rlhf.errors import UserError

PAIR = {"prompt": "Q?", "chosen": " yes", "rejected": " no"}


def load(path, kind="pair", **kw):
    return load_splits(DataConfig(kind=kind, source=str(path), format="canonical", **kw))


def error_of(path, kind="pair", **kw) -> str:
    with pytest.raises(UserError) as e:
        load(path, kind, **kw)
    return e.value.message


@pytest.mark.parametrize(
    ("bad_row", "kind", "expected"),
    [
        ({"prompt": "Q?", "chosen": " yes"}, "pair", "bad.jsonl:2: rejected: missing"),
        (
            {"prompt": "Q?", "choosen": " yes", "rejected": " no"},
            "pair",
            "chosen: missing (the row has `choosen`",
        ),
        (
            {"prompt": "Q?", "chosen": 3, "rejected": " no"},
            "pair",
            "bad.jsonl:2: chosen: expected a string or a list of {role, content} messages, got int",
        ),
        (
            {"prompt": "Q?", "chosen": " a", "rejected": " b", "margin": "big"},
            "pair",
            "margin: expected a number",
        ),
        (
            {"prompt": "Q?", "chosen": " a", "rejected": " a"},
            "pair",
            "bad.jsonl:2: rejected: identical to chosen",
        ),
        ({"prompt": "Once", "completion": "  "}, "sft", "bad.jsonl:2: completion: empty"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "sft", "messages: no assistant message"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "sft", "messages[0].role: expected one of"),
        (
            {"prompt": "Q", "responses": [" a", " b"], "ranks": [0, 0]},
            "ranked",
            "ranks: expected >= 2 responses with >= 2 distinct ranks, got all 2 ranks equal",
        ),
        ({"prompt": "Q", "responses": [" a"], "ranks": [0]}, "ranked", "got 1 response(s)"),
        (
            {"prompt": "Q", "responses": [" a", " b"], "ranks": [0, 1, 2]},
            "ranked",
            "ranks: 3 ranks for 2 responses",
        ),
        ({"prompt": "Q", "responses": [" a", ""], "ranks": [0, 1]}, "ranked", "responses[1]: empty"),
        (
            {"prompt": "Q", "responses": [" a", " b"], "ranks": [0, "1"]},
            "ranked",
            "ranks[1]: expected an integer",
        ),
        ({"promt": "Q"}, "prompt", "bad.jsonl:2: prompt: missing (the row has `promt`"),
        ({"prompt": [{"role": "user", "content": " "}]}, "prompt", "bad.jsonl:2: prompt[0].content: empty"),
        ({"prompt": 7}, "prompt", "bad.jsonl:2: prompt: expected a string or a list of {role, content} messages"),
    ],
)
def test_each_bad_row_is_named(write_jsonl, bad_row, kind, expected):
    good = {
        "pair": PAIR,
        "sft": {"text": "A story."},
        "ranked": {"prompt": "P", "responses": [" x", " y"], "ranks": [1, 0]},
        "prompt": {"prompt": [{"role": "user", "content": "Tell me a story."}]},
    }
    msg = error_of(write_jsonl([good[kind], bad_row], "bad.jsonl"), kind)
    assert expected in msg
    assert msg.startswith("1 of 2 rows from ") and "data.on_invalid=drop" in msg


def test_unparsable_line_and_non_object(write_jsonl):
    msg = error_of(write_jsonl([PAIR, '{"prompt": "Q?", "chosen": ', '"just a string"'], "bad.jsonl"))
    assert "bad.jsonl:2: row: not valid JSON" in msg
    assert "bad.jsonl:3: row: expected a JSON object, got str" in msg


def test_duplicate_names_the_first_occurrence(write_jsonl):
    assert "d.jsonl:3: row: exact duplicate of d.jsonl:1" in error_of(
        write_jsonl([PAIR, {**PAIR, "chosen": " ok"}, PAIR], "d.jsonl")
    )
    assert (
        len(load(write_jsonl([PAIR, PAIR, {**PAIR, "chosen": " ok"}]), dedupe=False, eval_fraction=0).train)
        == 3
    )


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(UserError, match=r"data.source: .*nope\.jsonl.* does not exist"):
        load(tmp_path / "nope.jsonl")


def test_one_error_lists_all_problems_capped_with_counts(write_jsonl):
    rows = [{"prompt": "Q", "chosen": " a", "rejected": " a"}] * 1 + [
        {"prompt": f"Q{i}", "chosen": ""} for i in range(30)
    ]
    err = pytest.raises(UserError, load, write_jsonl(rows)).value
    assert len(err.problems) == 22  # 20 listed + "... and N more" + counts per reason
    assert err.problems[20] == "... and 41 more"
    assert err.problems[21] == "problems by reason: missing_field 30, empty_text 30, chosen_equals_rejected 1"
    assert err.message.startswith("31 of 31 rows")


def test_drop_removes_bad_rows_and_counts_reasons(write_jsonl):
    rows = [PAIR, {"prompt": "Q"}, PAIR, {**PAIR, "rejected": " yes"}, {**PAIR, "chosen": " fine"}, "{oops"]
    splits = load(write_jsonl(rows), on_invalid="drop", eval_fraction=0.5)
    assert splits.dropped == {
        "missing_field": 1,
        "duplicate": 1,
        "chosen_equals_rejected": 1,
        "unparsable": 1,
    }
    assert len(splits.train) + len(splits.eval) == 2 and splits.n_raw == 6
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in splits.train + splits.eval)


def test_extra_keys_are_stripped(write_jsonl):
    splits = load(write_jsonl([{**PAIR, "id": 7, "margin": 1.5}]), eval_fraction=0)
    assert splits.train == [{**PAIR, "margin": 1.5}]


def test_margin_on_some_pairs_only_is_refused(write_jsonl):
    # TRL's reward loss subtracts the margin column from every pair: a missing one must not become 0 or null
    rows = [{**PAIR, "margin": 1.5}, {"prompt": "Q2?", "chosen": " c", "rejected": " d"}]
    with pytest.raises(UserError, match=r"'margin' is set on 1 pairs \(first \S+:1\) but missing on 1 "
                                        r"\(first \S+:2\)"):
        load(write_jsonl(rows), eval_fraction=0)
    splits = load(write_jsonl([{**r, "margin": 0.0} for r in rows[1:]] + rows[:1], "all.jsonl"), eval_fraction=0)
    assert sorted(r["margin"] for r in splits.train) == [0.0, 1.5]


def test_truncation_that_empties_a_row(write_jsonl, tokenizer):
    from rlhf.data import PreferenceEncoder, RewardEncoder, SFTEncoder

    long_prompt = "Once upon a time there was a very long story. " * 10
    sft = write_jsonl(
        [{"prompt": "Hi.", "completion": " Bye."}, {"prompt": long_prompt, "completion": " end."}], "s.jsonl"
    )
    cfg = DataConfig(kind="sft", source=str(sft), format="canonical", eval_fraction=0)
    with pytest.raises(UserError) as e:
        load_splits(cfg, SFTEncoder(tokenizer, 32))
    assert "s.jsonl:2: completion: nothing left to train on: the prompt alone is" in e.value.message

    pair = write_jsonl([PAIR, {"prompt": long_prompt, "chosen": " yes", "rejected": " no"}], "p.jsonl")
    cfg = DataConfig(kind="pair", source=str(pair), format="canonical", on_invalid="drop")
    # DPO keeps the start of prompt + response: the long prompt leaves nothing; the reward model cuts
    # the prompt from the left and keeps both responses.
    assert load_splits(cfg, PreferenceEncoder(tokenizer, 32)).dropped == {"truncated_empty": 1}
    assert load_splits(cfg, RewardEncoder(tokenizer, 32)).dropped == {}
