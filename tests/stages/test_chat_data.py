"""Real chat data through every stage: TRL's conversational formats with a chat template, the cases
of ../shared/cases/chat-data, and every row accounted for (what `rlhf check` calls valid is what
each trainer holds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.errors import UserError
from rlhf.runner import run_stage as run

CASES = Path(__file__).resolve().parents[3] / "shared" / "cases" / "chat-data"
QUIET = ["logger=none", "debug=smoke", "trainer.save_strategy=no"]
USER = {"role": "user", "content": "Tell me a story about a cat."}


def _case(name: str) -> Path:
    path = CASES / name
    assert path.exists(), f"case input missing: {path}"
    return path


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _conv_pairs(n: int) -> list:
    return [{"prompt": [{"role": "user", "content": f"Tell me story {i}."}],
             "chosen": [{"role": "assistant", "content": f"The cat was happy and played all day {i}."}],
             "rejected": [{"role": "assistant", "content": f"The cat was sad {i}."}]} for i in range(n)]


@pytest.fixture(scope="module")
def chat_sft(tmp_path_factory, compose_any):
    """A smoke SFT of stories260k with ChatML on conversations (case 01's rows): the chat policy."""
    out = tmp_path_factory.mktemp("chat") / "sft"
    run(compose_any(*QUIET, "data=jsonl", "data.kind=sft", f"data.source={_case('01-sft-messages-no-template/chat.jsonl')}",
                    "model.chat_template=chatml"), out)
    return out


def test_case_01_conversations_without_a_template_exit_2_before_any_model(cli, tmp_path):
    src = _case("01-sft-messages-no-template/chat.jsonl")
    for args in (["data=jsonl", "data.kind=sft", f"data.source={src}", "debug=smoke", "logger=none"],
                 ["check", "data=jsonl", "data.kind=sft", f"data.source={src}"]):
        res = cli(*args)
        assert res.returncode == 2, res.stderr[-2000:]
        assert "no chat template" in res.stderr and "model.chat_template=chatml" in res.stderr
        assert "Traceback" not in res.stderr
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(p.is_file() for p in runs.rglob("*"))


def test_case_01_with_a_template_trains_on_assistant_tokens(chat_sft):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.data import SFTEncoder

    m = json.loads((chat_sft / "metrics.json").read_text())
    assert m["rows"]["trained"] == m["rows"]["train"] == 23 and m["rows"]["evaluated"] == m["rows"]["eval"] == 1
    tok = AutoTokenizer.from_pretrained(chat_sft / "model")  # saved with its template and EOS
    assert tok.chat_template and tok.eos_token == "<|im_end|>" and len(tok) == 514
    assert AutoModelForCausalLM.from_pretrained(chat_sft / "model").get_input_embeddings().num_embeddings == 514
    row = json.loads(_case("01-sft-messages-no-template/chat.jsonl").read_text().splitlines()[0])
    (enc,) = SFTEncoder(tok, 512).encode([row])
    assert enc.features["input_ids"] == tok.apply_chat_template(row["messages"])["input_ids"]
    trained = tok.decode([t for t in enc.features["labels"] if t != -100])
    assert trained == row["messages"][1]["content"] + "<|im_end|>\n"  # the user's turn carries no loss


def test_case_02_dpo_long_prompts_are_listed_or_dropped_and_counted(compose, chat_sft, tmp_path):
    from rlhf.data import DataConfig, PreferenceEncoder, preflight
    from rlhf.models import load_tokenizer

    src = _case("02-dpo-long-prompt/pairs.jsonl")
    args = [*QUIET, "stage=dpo", "data=jsonl", "data.kind=pair", f"data.source={src}", "data.eval_rows=4",
            f"model.init_from={chat_sft}", "model.max_length=64", "evaluation.enabled=false"]
    with pytest.raises(UserError) as e:
        run(compose(*args), tmp_path / "err")
    assert e.value.message.startswith("10 of 20 rows")
    assert "pairs.jsonl:1: prompt: the prompt alone is" in e.value.message and "keeps the start" in e.value.message
    assert not (tmp_path / "err").exists()
    m = run(compose(*args, "data.on_invalid=drop"), tmp_path / "drop").metrics
    assert m["dropped_rows"] == {"truncated_empty": 10}
    assert (m["rows"]["train"], m["rows"]["eval"]) == (6, 4)
    assert (m["rows"]["trained"], m["rows"]["evaluated"]) == (6, 4)  # TRL filtered nothing of its own
    cfg = compose(*args, "data.on_invalid=drop")
    tok = load_tokenizer(cfg.model, str(chat_sft / "model"))
    report = preflight(DataConfig(kind="pair", source=str(src), format="canonical", eval_rows=4, on_invalid="drop"),
                       PreferenceEncoder(tok, 64))
    assert "keep_start" in report["tokens"]["rule"] and (report["split"]["train"], report["split"]["eval"]) == (6, 4)


def test_case_09_reward_pairs_left_identical_by_truncation(compose, tmp_path):
    src = _case("09-reward-truncation/pairs_common_start.jsonl")
    with pytest.raises(UserError) as e:
        run(compose(*QUIET, "stage=reward", "data=jsonl", "data.kind=pair", f"data.source={src}", "data.eval_rows=4",
                    "model.max_length=64", "trainer.learning_rate=1e-3"), tmp_path / "rm")
    assert e.value.message.startswith("24 of 24 rows")
    assert "chosen and rejected are identical after truncation to 64 tokens" in e.value.message


@pytest.mark.slow
def test_case_09_mirror_oasst_at_128_tokens_validates_and_trains(compose, tmp_path):
    m = run(compose(*QUIET, "stage=reward", "data=oasst", "model.max_length=128"), tmp_path / "rm").metrics
    rows = m["rows"]  # debug=smoke reads 64 of the 80 trees
    assert rows["dropped"] == {} and rows["valid"] == rows["rows"] > 100 and rows["trained"] == rows["train"]


def test_case_17_conversational_pairs_train_dpo_and_reward(compose, chat_sft, tmp_path):
    src = _case("17-conversational-pairs/conv_pairs.jsonl")
    common = [*QUIET, "data=jsonl", "data.kind=pair", f"data.source={src}", f"model.init_from={chat_sft}",
              "evaluation.enabled=false", "data.eval_rows=2"]
    dpo = run(compose(*common, "stage=dpo"), tmp_path / "dpo").metrics
    assert dpo["rows"]["trained"] == dpo["rows"]["train"] == 10
    rm = run(compose(*common, "stage=reward"), tmp_path / "rm").metrics
    assert rm["rows"]["trained"] == rm["rows"]["train"] == 10


def test_case_17_without_a_template_is_the_message_of_case_01(compose, tmp_path):
    src = _case("17-conversational-pairs/conv_pairs.jsonl")
    with pytest.raises(UserError, match="no chat template.*model.chat_template=chatml"):
        run(compose(*QUIET, "stage=reward", "data=jsonl", "data.kind=pair", f"data.source={src}"), tmp_path / "rm")


def test_case_18_a_second_length_is_refused(cli):
    res = cli("stage=reward", "debug=smoke", "trainer.max_length=64", "trainer.max_steps=2", "logger=none")
    assert res.returncode == 2 and "set model.max_length=64" in res.stderr and "Traceback" not in res.stderr


def test_check_exits_2_when_rows_are_invalid(cli, tmp_path):
    bad = _write(tmp_path / "bad.jsonl", [{"prompt": "Q", "chosen": " a", "rejected": " a"}] * 3)
    res = cli("check", "stage=reward", "data=jsonl", "data.kind=pair", f"data.source={bad}")
    assert res.returncode == 2 and "3 invalid" in res.stdout and "rows from" in res.stderr
    assert cli("check", "stage=reward", "data=jsonl", "data.kind=pair", f"data.source={bad}",
               "data.on_invalid=drop", "data.dedupe=false").returncode == 2  # nothing valid left to train on
    good = _write(tmp_path / "good.jsonl", [{"prompt": "Q", "chosen": " a", "rejected": " b"}])
    assert cli("check", "stage=reward", "data=jsonl", "data.kind=pair", f"data.source={good}").returncode == 0


def test_the_four_formats_train_and_each_stage_holds_what_check_counted(compose, chat_sft, tmp_path):
    """sft (messages, conversational prompt/completion), reward (pairs, implicit prompt, ranked), dpo
    (implicit prompt), grpo (the prompts of implicit-prompt pairs; prompt-only rows): every trainer holds
    exactly the rows validated."""
    from rlhf.data import preflight
    from rlhf.models import load_tokenizer
    from rlhf.stages import stage_module
    from rlhf.stages.inputs import data_config

    pairs = _conv_pairs(12)
    files = {
        "sft": _write(tmp_path / "sft.jsonl", [{"messages": [p["prompt"][0], p["chosen"][0]]} for p in pairs[:6]]
                      + [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs[6:]]),
        "implicit": _write(tmp_path / "implicit.jsonl", [{"chosen": p["prompt"] + p["chosen"],
                                                         "rejected": p["prompt"] + p["rejected"]} for p in pairs]),
        "ranked": _write(tmp_path / "ranked.jsonl", [{"prompt": p["prompt"], "responses": [p["chosen"], p["rejected"]],
                                                     "ranks": [0, 1]} for p in pairs]),
        "prompts": _write(tmp_path / "prompts.jsonl", [{"prompt": p["prompt"]} for p in pairs]),  # TRL's prompt-only
    }
    runs = [("sft", "sft", ["data.kind=sft"]), ("reward", "implicit", ["data.kind=pair"]),
            ("reward", "ranked", ["data.kind=ranked"]), ("dpo", "implicit", ["data.kind=pair"]),
            ("grpo", "implicit", ["data.kind=pair", "stage.reward_funcs=[length]"]),
            ("grpo", "prompts", ["data.kind=prompt", "stage.reward_funcs=[length]"])]
    for stage, data, extra in runs:
        cfg = compose(*QUIET, f"stage={stage}", "data=jsonl", f"data.source={files[data]}", "data.eval_rows=2",
                      f"model.init_from={chat_sft}", "evaluation.enabled=false", *extra)
        tok = load_tokenizer(cfg.model, str(chat_sft / "model"))
        report = preflight(data_config(cfg.data), stage_module(stage).encoder(cfg, tok))
        m = run(cfg, tmp_path / f"{stage}-{data}").metrics
        assert report["conversational"] and report["invalid"]["total"] == 0, (stage, report["invalid"])
        assert m["rows"]["train"] == report["split"]["train"] and m["rows"]["trained"] == m["rows"]["train"], (stage, m)
