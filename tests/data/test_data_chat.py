"""TRL's conversational formats through validation and the one tokenisation path, on the real
stories260k tokenizer with the shipped ChatML template."""

from __future__ import annotations

import pytest

from rlhf.data import (
    DataConfig,
    PreferenceEncoder,
    PromptEncoder,
    RewardEncoder,
    SFTEncoder,
    load_splits,
    preflight,
)
from rlhf.data.presets import hh_rlhf, oasst_trees, transcript_turns
from rlhf.errors import UserError

USER = {"role": "user", "content": "Tell me a story."}
GOOD = {"role": "assistant", "content": "The cat was happy."}
BAD = {"role": "assistant", "content": "The cat was sad."}
CONV = [{"role": "system", "content": "Be kind."}, USER, GOOD, {"role": "user", "content": "More?"},
        {"role": "assistant", "content": "The end."}]


def load(write_jsonl, rows, kind, encoder=None, **kw):
    return load_splits(DataConfig(kind=kind, source=str(write_jsonl(rows)), format="canonical", eval_fraction=0, **kw),
                       encoder)


def test_the_four_trl_formats_validate(write_jsonl):
    sft = load(write_jsonl, [{"messages": CONV}, {"prompt": [USER], "completion": [GOOD]}], "sft")
    assert sft.conversational and sft.train[1] == {"prompt": [USER], "completion": [GOOD]}
    pair = load(write_jsonl, [{"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}], "pair")
    assert pair.train[0]["chosen"] == [GOOD]
    ranked = load(write_jsonl, [{"prompt": [USER], "responses": [[GOOD], [BAD]], "ranks": [0, 1]}], "ranked")
    assert ranked.train[0]["responses"] == [[GOOD], [BAD]]


def test_implicit_prompt_pairs_split_at_the_last_shared_turn(write_jsonl):
    rows = [{"chosen": [USER, GOOD], "rejected": [USER, BAD]},
            {"chosen": "Q: colour of the sky? A: blue", "rejected": "Q: colour of the sky? A: green"}]
    splits = load(write_jsonl, rows, "pair")
    assert splits.train[0] == {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}
    text = splits.train[1]
    assert text["prompt"] + text["chosen"] == rows[1]["chosen"] and text["prompt"].startswith("Q: colour")


def test_a_string_reply_to_a_conversation_is_the_assistant_turn(write_jsonl):
    splits = load(write_jsonl, [{"prompt": [USER], "chosen": "yes", "rejected": "no"}], "pair")
    assert splits.train[0]["chosen"] == [{"role": "assistant", "content": "yes"}]


def test_conversational_true_wraps_plain_rows(write_jsonl):
    splits = load(write_jsonl, [{"prompt": "Hi", "completion": "there"}], "sft", conversational=True)
    assert splits.train[0] == {"prompt": [{"role": "user", "content": "Hi"}],
                               "completion": [{"role": "assistant", "content": "there"}]}


@pytest.mark.parametrize(("row", "expected"), [
    ({"prompt": [{"role": "bot", "content": "x"}], "chosen": [GOOD], "rejected": [BAD]}, "prompt[0].role: expected one"),
    ({"prompt": [USER], "chosen": [USER], "rejected": [BAD]}, "chosen: no assistant message"),
    ({"prompt": [USER], "chosen": [{"role": "assistant"}], "rejected": [BAD]}, "chosen[0].content: missing"),
    ({"prompt": [USER], "chosen": [GOOD], "rejected": [GOOD]}, "rejected: identical to chosen"),
])
def test_bad_conversations_are_named(write_jsonl, row, expected):
    with pytest.raises(UserError) as e:
        load(write_jsonl, [row], "pair")
    assert expected in e.value.message and "rows.jsonl:1" in e.value.message


def test_conversations_without_a_template_are_refused_with_the_way_out(write_jsonl, tokenizer):
    with pytest.raises(UserError) as e:
        load(write_jsonl, [{"messages": CONV}], "sft", SFTEncoder(tokenizer, 128))
    assert "no chat template" in e.value.message and "model.chat_template=chatml" in e.value.message


def test_sft_trains_on_assistant_turns_only(chat_tokenizer):
    tok = chat_tokenizer
    (enc,) = SFTEncoder(tok, 256).encode([{"messages": CONV}])
    ids, labels = enc.features["input_ids"], enc.features["labels"]
    assert ids == tok.apply_chat_template(CONV)["input_ids"] and ids.count(tok.bos_token_id) == 1
    trained = tok.decode([t for t in labels if t != -100])
    assert trained == "The cat was happy.<|im_end|>\nThe end.<|im_end|>\n"
    (last,) = SFTEncoder(tok, 256, "completion").encode([{"messages": CONV}])
    assert tok.decode([t for t in last.features["labels"] if t != -100]) == "The end.<|im_end|>\n"
    (every,) = SFTEncoder(tok, 256, "all").encode([{"messages": CONV}])
    assert every.trained_tokens == len(ids) > enc.trained_tokens


def test_prompt_completion_conversation_and_truncation(chat_tokenizer):
    tok = chat_tokenizer
    row = {"prompt": [USER], "completion": [GOOD]}
    (enc,) = SFTEncoder(tok, 256).encode([row])
    prompt = tok.apply_chat_template([USER], add_generation_prompt=True)["input_ids"]
    assert enc.features["input_ids"][: len(prompt)] == prompt
    assert all(x == -100 for x in enc.features["labels"][: len(prompt)])
    (cut,) = SFTEncoder(tok, len(prompt)).encode([row])
    assert cut.problem.reason == "truncated_empty" and "the prompt alone" in cut.problem.detail


def test_pair_and_prompt_ids_equal_apply_chat_template(chat_tokenizer):
    tok = chat_tokenizer
    row = {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}
    gen_prompt = tok.apply_chat_template([USER], add_generation_prompt=True)["input_ids"]
    (dpo,) = PreferenceEncoder(tok, 256).encode([row])
    assert dpo.features["prompt_ids"] == gen_prompt
    assert dpo.features["prompt_ids"] + dpo.features["chosen_ids"] == tok.apply_chat_template([USER, GOOD])["input_ids"]
    (p,) = PromptEncoder(tok, 256).encode([row])
    assert p.features["prompt_ids"] == gen_prompt
    (rm,) = RewardEncoder(tok, 256).encode([row])
    assert rm.features["chosen_ids"] == tok.apply_chat_template([USER, GOOD])["input_ids"]  # one BOS, no extra EOS
    scored = RewardEncoder(tok, 256).encode_scored([[USER]], ["The cat was happy."])
    assert scored == [rm.features["chosen_ids"]]


def test_a_template_that_refuses_a_conversation_is_a_row_problem(write_jsonl, chat_tokenizer):
    import copy

    tok = copy.deepcopy(chat_tokenizer)
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system "
                         "turns') }}{% endif %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}")
    rows = [{"messages": CONV}, {"messages": [USER, GOOD]}]
    splits = load(write_jsonl, rows, "sft", SFTEncoder(tok, 256), on_invalid="drop")
    assert splits.dropped == {"bad_value": 1} and len(splits.train) == 1


def test_preflight_reports_trained_token_share_and_plain_rows_beside_a_template(write_jsonl, chat_tokenizer):
    cfg = DataConfig(kind="sft", source=str(write_jsonl([{"messages": CONV}, {"prompt": "Hi", "completion": " there"}])),
                     format="canonical", eval_fraction=0)
    report = preflight(cfg, SFTEncoder(chat_tokenizer, 256))
    assert 0 < report["tokens"]["trained_token_share"] < 1
    assert report["warnings"] and "data.conversational=true" in report["warnings"][0]


def test_dialogue_presets_as_conversations(assets_dir):
    import json

    raw = json.loads((assets_dir / "data/hh-rlhf/harmless-base.jsonl").open().readline())
    (row,) = hh_rlhf(raw, conversational=True)
    assert row["prompt"][0]["role"] == "user" and row["prompt"][-1]["role"] == "user"
    assert row["chosen"][0]["role"] == "assistant" and len(row["chosen"]) >= 1
    assert transcript_turns("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:") == [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    tree = json.loads((assets_dir / "data/oasst/en_trees.jsonl").open().readline())
    sft = oasst_trees(tree, kind="sft")
    assert sft and all(r["messages"][-1]["role"] == "assistant" for r in sft)
    assert all(r["messages"][0]["role"] == "user" for r in sft)
    ranked = oasst_trees(tree, conversational=True, kind="ranked")
    assert all(isinstance(r["prompt"], list) and r["responses"][0][0]["role"] == "assistant" for r in ranked)
