"""The online RL stages (our PPO; TRL's GRPO and RLOO) end to end on stories260k: SFT artifact in,
reward-model artifact as the reward, a policy artifact with its evaluation out, and the frontier
report reading them all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.errors import UserError
from rlhf.run.artifacts import read_artifact
from rlhf.runner import run_stage as run

QUIET = ["logger=none", "debug=smoke", "evaluation.max_prompts=4", "evaluation.generation.max_new_tokens=8",
         "evaluation.judge=vader"]


@pytest.fixture(scope="module")
def base(tmp_path_factory, compose_any):
    """A smoke SFT policy and a reward model trained from it (a few steps: enough to be real artifacts)."""
    root = tmp_path_factory.mktemp("online")
    run(compose_any("logger=none", "debug=smoke", "trainer.eval_strategy=no", "trainer.save_strategy=no"), root / "sft")
    run(compose_any("logger=none", "debug=smoke", "stage=reward", f"model.init_from={root / 'sft'}",
                 "model.max_length=64", "trainer.eval_strategy=no", "trainer.save_strategy=no"), root / "rm")
    return root


def test_ppo_stage_with_lora_writes_policy_value_and_eval(base, tmp_path, compose):
    art = run(compose("stage=ppo", *QUIET, f"model.init_from={base / 'sft'}", f"stage.reward_model={base / 'rm'}",
                       "peft=lora"), tmp_path / "ppo")
    assert art.kind == "policy" and art.stage == "ppo" and art.adapter_dir == "adapter"
    m = art.metrics
    assert m["iterations"] == 2 and m["reference_in_memory"] is False
    assert m["rollout_tokens_per_s"] > 0 and "kl_last_half_within_30pct" in m  # adaptive by default
    history = json.loads((tmp_path / "ppo/ppo_history.json").read_text())
    assert [h["iteration"] for h in history] == [1, 2] and "objective/rlhf_reward" in history[0]
    assert (tmp_path / "ppo/value").is_dir() and (tmp_path / "ppo/eval.json").is_file()
    assert not (tmp_path / "ppo/checkpoints").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "ppo/model")  # a plain HF model, adapter merged
    assert read_artifact(tmp_path / "ppo").extra["reference_dir"] == str(base / "sft")


def test_ppo_with_a_judge_and_a_policy_value_head(base, tmp_path, compose):
    art = run(compose("stage=ppo", *QUIET, f"model.init_from={base / 'sft'}", "stage.judge=vader",
                       "stage.value_from=policy", "trainer.kl_control=fixed", "trainer.kl_estimator=k3"),
              tmp_path / "ppo")
    assert art.metrics["reference_in_memory"] is True and "kl_last_half_within_30pct" not in art.metrics


def test_every_model_a_ppo_run_holds_has_the_configured_dtype(base, tmp_path, compose):
    m = run(compose("stage=ppo", *QUIET, f"model.init_from={base / 'sft'}", f"stage.reward_model={base / 'rm'}",
                    "model.dtype=bfloat16", "evaluation.enabled=false"), tmp_path / "ppo").metrics
    assert m["model_dtypes"] == {"policy": "bfloat16", "reference": "bfloat16", "value": "bfloat16",
                                 "reward": "bfloat16"}
    assert m["rows"]["trained"] == m["prompts"] <= m["rows"]["train"]  # the distinct prompts of the train split


def test_ppo_without_a_reward_is_refused_before_training(base, tmp_path, compose):
    with pytest.raises(UserError, match="stage.reward_model"):
        run(compose("stage=ppo", *QUIET, f"model.init_from={base / 'sft'}"), tmp_path / "ppo")
    assert not (tmp_path / "ppo" / "artifact.json").exists()
    with pytest.raises(UserError, match="did you mean"):
        run(compose("stage=grpo", *QUIET, f"model.init_from={base / 'sft'}", "stage.reward_funcs=[vadr]"),
            tmp_path / "grpo")


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_critic_free_stage_trains_on_rm_plus_named_function(base, tmp_path, stage, compose):
    art = run(compose(f"stage={stage}", *QUIET, f"model.init_from={base / 'sft'}", f"stage.reward_model={base / 'rm'}",
                       "stage.reward_funcs=[vader]"), tmp_path / stage)
    assert art.kind == "policy" and art.stage == stage
    m = art.metrics
    assert m["rewards"] == [f"reward_model ({base / 'rm'})", "vader"] and m["reward_last"] is not None
    assert "kl" in m["policy_eval"] and (tmp_path / stage / "eval.json").is_file()
    assert m["rows"]["trained"] == m["prompts"]  # TRL holds the distinct prompts validated, no more, no fewer


def test_frontier_report_reads_every_method(base, tmp_path, compose):
    sweep = tmp_path / "sweep"
    run(compose("stage=ppo", *QUIET, f"model.init_from={base / 'sft'}", f"stage.reward_model={base / 'rm'}"),
        sweep / "0")
    run(compose("stage=grpo", *QUIET, f"model.init_from={base / 'sft'}", "stage.reward_funcs=[vader]"), sweep / "1")
    res = subprocess.run([str(Path(sys.executable).parent / "rlhf"), "report", str(sweep), "--no-wandb"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = json.loads((sweep / "frontier.json").read_text())
    assert {r["method"] for r in rows} == {"ppo", "grpo"}
    assert {r["knob"] for r in rows} == {"target=6", "β=0.04"}
    assert (sweep / "frontier.png").stat().st_size > 0 and "| ppo | target=6 |" in (sweep / "frontier.md").read_text()


def test_ppo_logs_the_usual_names_to_an_offline_wandb_run(base, cli, tmp_path):
    res = cli("stage=ppo", "logger=wandb", "debug=smoke", f"model.init_from={base / 'sft'}", "stage.judge=vader",
              "stage.value_from=policy", "evaluation.max_prompts=4", "evaluation.generation.max_new_tokens=8",
              f"run_dir={tmp_path / 'ppo'}", env={"WANDB_MODE": ""})
    assert res.returncode == 0, res.stderr[-3000:]
    runs = list((tmp_path / "ppo" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "one offline W&B run"
    logged = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    for name in (b"objective/kl", b"objective/scores", b"policy/clipfrac", b"val/explained_variance", b"kl_coef"):
        assert name in logged, name
