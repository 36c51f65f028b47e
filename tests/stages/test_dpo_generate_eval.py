"""DPO, generation and evaluation on the real stories260k model, TinyStories, VADER and TRL's DPOTrainer."""

from __future__ import annotations

import json

import pytest
import torch

from rlhf.errors import UserError
from rlhf.run.artifacts import read_artifact
from rlhf.runner import run_stage as run

QUIET = ["logger=none", "trainer.save_strategy=no", "trainer.logging_steps=5"]


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory, compose_any):
    """A short SFT run: the policy every test here starts from."""
    out = tmp_path_factory.mktemp("sft") / "run"
    run(compose_any(*QUIET, "debug=smoke", "trainer.eval_strategy=no"), out)
    return out


def _generate(compose, sft_dir, out, *extra):
    cfg = compose(*QUIET, "stage=generate", f"model.init_from={sft_dir}", "stage.judge=rlhf.judges.vader",
                  "stage.num_prompts=48", "stage.generation.max_new_tokens=24", *extra)
    return run(cfg, out)


def test_generate_writes_pairs_the_reward_stage_trains_on(compose, sft_dir, tmp_path):
    art = _generate(compose, sft_dir, tmp_path / "gen")
    assert art.kind == "data" and art.extra["data_kind"] == "pair"
    assert art.metrics["rows"]["trained"] == art.metrics["prompts"] == 48  # distinct train prompts sampled
    rows = [json.loads(line) for line in (tmp_path / "gen/data.jsonl").read_text().splitlines()]
    assert 0 < len(rows) <= 48 and set(rows[0]) == {"prompt", "chosen", "rejected"}
    samples = [json.loads(line) for line in (tmp_path / "gen/samples.jsonl").read_text().splitlines()]
    from rlhf.judges import vader

    for s in samples[:5]:  # the chosen text really is the judge's best of the 4 samples
        assert len(s["completions"]) == 4 and s["scores"] == pytest.approx(vader([], s["completions"]))
    rm = run(compose("stage=reward", *QUIET, "trainer.eval_strategy=no", "data=generated",
                     f"data.source={tmp_path / 'gen/data.jsonl'}", f"model.init_from={sft_dir}",
                     "model.max_length=64", "trainer.max_steps=3"), tmp_path / "rm")
    assert rm.kind == "reward" and rm.metrics["train_rows"] + rm.metrics["eval_rows"] == len(rows)


def test_generate_ranked_output_and_best_of_n(compose, sft_dir, tmp_path):
    art = _generate(compose, sft_dir, tmp_path / "ranked", "stage.output=ranked")
    row = json.loads((tmp_path / "ranked/data.jsonl").read_text().splitlines()[0])
    assert art.extra["data_kind"] == "ranked" and len(row["responses"]) == len(row["ranks"]) >= 2
    assert min(row["ranks"]) == 0
    bon = _generate(compose, sft_dir, tmp_path / "bon", "stage.output=best_of_n").metrics
    assert bon["best_of_n_score"] >= bon["single_sample_score"]
    assert bon["kl_bound"] == pytest.approx(torch.log(torch.tensor(4.0)).item() - 0.75)


def test_kl_is_zero_when_policy_is_reference(sft_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.evaluation import evaluate_policy
    from rlhf.judges import vader
    from rlhf.schema import Generation

    tok = AutoTokenizer.from_pretrained(sft_dir / "model")
    a = AutoModelForCausalLM.from_pretrained(sft_dir / "model")
    b = AutoModelForCausalLM.from_pretrained(sft_dir / "model")
    prompts = ["Once upon a time, there was a little dog.", "Lily went to the park."]
    res = evaluate_policy(a, tok, prompts, [tok(p).input_ids for p in prompts],
                          Generation(num_samples=3, max_new_tokens=16, seed=7), stop_ids=[tok.eos_token_id],
                          reference=b, judge=vader)
    assert abs(res["kl"]) < 1e-4 and res["n_samples"] == 6
    # same seeds, same weights: the same samples, so every comparison is a tie
    assert res["gold_win_rate"] == 0.5 and res["gold_policy"] == res["gold_reference"]
    assert len(res["samples"]) == 6 and {"prompt", "policy", "reference", "kl"} <= set(res["samples"][0])


@pytest.mark.slow
def test_dpo_raises_margin_and_evaluates_against_the_sft_reference(compose, sft_dir, tmp_path):
    _generate(compose, sft_dir, tmp_path / "gen", "stage.num_prompts=160")
    cfg = compose(*QUIET, "stage=dpo", "data=generated", f"data.source={tmp_path / 'gen/data.jsonl'}",
                  f"model.init_from={sft_dir}", "model.max_length=128", "trainer.learning_rate=1e-3",
                  "trainer.beta=0.1", "trainer.eval_strategy=no", "trainer.per_device_train_batch_size=8",
                  "evaluation.judge=rlhf.judges.vader", "evaluation.max_prompts=8",
                  "evaluation.generation.max_new_tokens=16")
    art = run(cfg, tmp_path / "dpo")
    m = art.metrics
    assert m["eval_margin"] > m["eval_before_margin"], m
    assert abs(m["eval_before_margin"]) < 1e-3  # policy == reference before training
    ev = json.loads((tmp_path / "dpo/eval.json").read_text())
    assert ev["kl"] > 0 and "gold_win_rate" in ev and ev["samples"]
    assert art.extra["reference_dir"] == str(sft_dir.resolve())
    assert read_artifact(tmp_path / "dpo", expect_kinds=("policy",)).kind == "policy"


def test_lora_dpo_keeps_no_second_model(compose, sft_dir, tmp_path):
    _generate(compose, sft_dir, tmp_path / "gen")
    cfg = compose(*QUIET, "stage=dpo", "data=generated", f"data.source={tmp_path / 'gen/data.jsonl'}",
                  f"model.init_from={sft_dir}", "peft=lora", "model.max_length=64", "trainer.max_steps=2",
                  "trainer.eval_strategy=no", "evaluation.max_prompts=2", "evaluation.generation.max_new_tokens=8")
    m = run(cfg, tmp_path / "dpo").metrics
    assert m["reference_in_memory"] is False and m["params_trainable"] < m["params_total"] / 2
    assert (tmp_path / "dpo/adapter/adapter_model.safetensors").is_file()


def test_dpo_refuses_a_reward_artifact_and_bad_loss_options(compose, sft_dir, tmp_path):
    rm = run(compose("stage=reward", *QUIET, "debug=smoke", "trainer.eval_strategy=no", "model.max_length=64",
                     f"model.init_from={sft_dir}"), tmp_path / "rm")
    assert rm.kind == "reward"
    with pytest.raises(UserError, match="holds a reward model"):
        run(compose(*QUIET, "stage=dpo", "debug=smoke", f"model.init_from={tmp_path / 'rm'}"), tmp_path / "dpo")
    assert not (tmp_path / "dpo").exists()
    from rlhf.runner import validate

    with pytest.raises(UserError, match="exo_pair needs label_smoothing > 0"):
        validate(compose("stage=dpo", "trainer.loss_type=[exo_pair]"))
    with pytest.raises(UserError, match="did you mean `sigmoid`"):
        validate(compose("stage=dpo", "trainer.loss_type=[sigmoidd]"))
    with pytest.raises(UserError, match="2 weights for 1 loss types"):
        validate(compose("stage=dpo", "trainer.loss_weights=[0.5,0.5]"))
    validate(compose("stage=dpo", "trainer.loss_type=[sigmoid,bco_pair,sft]", "trainer.loss_weights=[0.8,0.2,1.0]"))


def test_eval_table_lands_in_the_offline_wandb_run(cli, sft_dir, tmp_path, compose):
    _generate(compose, sft_dir, tmp_path / "gen")
    res = cli("stage=dpo", "logger=wandb", "debug=smoke", "data=generated", f"data.source={tmp_path / 'gen/data.jsonl'}",
              f"model.init_from={sft_dir}", "model.max_length=64", "evaluation.judge=rlhf.judges.vader",
              "evaluation.max_prompts=4", "evaluation.generation.max_new_tokens=8", f"run_dir={tmp_path / 'dpo'}",
              env={"WANDB_MODE": ""})
    assert res.returncode == 0, res.stderr[-3000:]
    tables = list((tmp_path / "dpo" / "wandb").rglob("*samples*.table.json"))
    assert tables, "no samples table in the offline W&B run"
    assert "policy" in tables[0].read_text()
