"""Curation the preflight used to miss (issue 21; /work/shared/cases/trust-3/curation): each is a row
problem with file:line:field, or (negative margins) a warning with the count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.data import DataConfig, format_preflight, load_splits, preflight
from rlhf.errors import UserError

CASE = Path(__file__).resolve().parents[2] / ".." / "shared" / "cases" / "trust-3" / "curation"


def _cfg(kind, path, **kw):
    return DataConfig(kind=kind, source=str(path), format="canonical", **kw)


def _refused(cfg) -> str:
    with pytest.raises(UserError) as e:
        load_splits(cfg)
    return e.value.message


def test_responses_that_repeat_the_prompt_are_named():
    cfg = _cfg("pair", (CASE / "pairs_prompt_repeated.jsonl").resolve())
    msg = _refused(cfg)
    assert "20 of 20 rows" in msg and "pairs_prompt_repeated.jsonl:1: chosen: starts with the whole prompt" in msg
    report = preflight(cfg)
    assert report["invalid"]["by_reason"] == {"response_repeats_prompt": 20}
    assert len(report["invalid"]["examples"]["response_repeats_prompt"]) == 5


def test_a_response_that_repeats_a_conversations_prompt_or_a_ranked_prompt(write_jsonl):
    """Kinds not in the case folder: a ranked list, an SFT completion; a short prompt is not flagged."""
    q = "Write a short story about a friendly dragon."
    rows = [{"prompt": q, "responses": [" A dragon smiled.", q + " A dragon smiled."], "ranks": [0, 1]},
            {"prompt": "Q:", "responses": ["Q: is a good question.", " Yes."], "ranks": [0, 1]}]
    msg = _refused(_cfg("ranked", write_jsonl(rows)))
    assert "rows.jsonl:1: responses[1]: starts with the whole prompt" in msg and "rows.jsonl:2" not in msg
    sft = [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": q + " Ok."}]}]
    assert "rows.jsonl:1: completion: starts with the whole prompt" in _refused(_cfg("sft", write_jsonl(sft)))


def test_a_key_given_twice_is_named_with_its_line(write_jsonl, tmp_path):
    path = write_jsonl(['{"prompt": "Hello there", "completion": "a", "completion": "b"}',
                        {"prompt": "x", "completion": " y"},
                        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c", '
                        '"role": "user"}]}'])
    msg = _refused(_cfg("sft", path))
    assert "rows.jsonl:1: completion: given twice in one JSON object" in msg
    assert "rows.jsonl:3: role: given twice" in msg and "rows.jsonl:2" not in msg
    whole = tmp_path / "rows.json"  # a whole-file JSON list: the record is named
    whole.write_text('[{"prompt": "x", "completion": " y"}, {"text": "a", "text": "b"}]')
    assert "rows.json:row 2: text: given twice" in _refused(_cfg("sft", whole))


def test_negative_margins_are_reported_with_their_count(write_jsonl):
    rows = [{"prompt": f"Tell me about day {i}.", "chosen": " Sunny.", "rejected": " Rain.", "margin": -5}
            for i in range(12)]
    text = format_preflight(preflight(_cfg("pair", write_jsonl(rows))))
    assert "warning: 12 of 12 pairs have a negative margin (first rows.jsonl:1)" in text


@pytest.mark.parametrize("margin", [1e308, -1e30, 2e4])
def test_a_margin_that_overflows_the_loss_is_a_row_problem(write_jsonl, margin):
    rows = [{"prompt": f"Day {i}.", "chosen": " Sunny.", "rejected": " Rain.", "margin": margin if i == 3 else 1.0}
            for i in range(6)]
    msg = _refused(_cfg("pair", write_jsonl(rows)))
    assert f"rows.jsonl:4: margin: {margin:g} is beyond ±10000" in msg and "1 of 6 rows" in msg


def test_absurd_ranks_are_row_problems(write_jsonl):
    path = write_jsonl(['{"prompt": "p", "responses": ["a", "b"], "ranks": [0, 1000000000000000000000000000000]}',
                        {"prompt": "q", "responses": ["a", "b", "c"], "ranks": [0, 2, 5000]},
                        {"prompt": "r", "responses": ["a", "b"], "ranks": [0, 2]}])  # a gap is fine
    msg = _refused(_cfg("ranked", path))
    assert "rows.jsonl:1: ranks[1]: expected a small rank, 0 (best) to 1000, got 1e+30" in msg
    assert "rows.jsonl:2: ranks[2]: expected a small rank, 0 (best) to 1000, got 5000" in msg and ":3:" not in msg


def test_lone_surrogates_are_row_problems_and_check_does_not_crash(write_jsonl, tokenizer):
    from rlhf.data import SFTEncoder

    path = write_jsonl(['{"prompt": "p\\ud800", "completion": " a"}', {"text": "ok then"},
                        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "\\udc00c"}]}'])
    msg = _refused(_cfg("sft", path))
    assert "rows.jsonl:1: prompt: a lone surrogate U+D800 at character 2" in msg
    assert "rows.jsonl:3: messages[1].content: a lone surrogate U+DC00 at character 1" in msg
    report = preflight(_cfg("sft", path), SFTEncoder(tokenizer, 64))
    assert report["invalid"]["by_reason"] == {"unencodable_text": 2}
    json.dumps(report)
    format_preflight(report).encode("utf-8")  # printable
