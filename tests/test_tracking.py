"""Complete tracking, read back from what the real libraries wrote: the whole composed config, the
stage as W&B job_type, the same metric names on W&B, TensorBoard and history.jsonl (PPO included),
and the policy-vs-reference evaluation as curves during DPO / PPO / GRPO / RLOO."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.errors import UserError
from rlhf.runner import run_stage as run

pytestmark = pytest.mark.slow  # every test here trains a stage or two (still run in CI)
EVAL = ["evaluation.every_steps=2", "evaluation.curve_prompts=2", "evaluation.max_prompts=3",
        "evaluation.generation.max_new_tokens=8", "evaluation.judge=vader"]


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def _steps(history: list[dict], name: str) -> list[int]:
    return [h["step"] for h in history if name in h]


def _tensorboard(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _tb_text(acc, tag: str) -> str:
    return b"".join(e.tensor_proto.string_val[0] for e in acc.Tensors(f"{tag}/text_summary")).decode()


def _wandb_records(run_dir: Path):
    """The records of an offline run's `.wandb` file (W&B's LevelDB-style log: a 7-byte header, then
    records of crc32(4) length(2, little-endian) type(1: full, 2-4: first/middle/last) in 32 KiB
    blocks), each a `wandb_internal_pb2.Record`."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("*.wandb")
    data, pos, block, parts = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        parts, pos = (b"" if kind in (1, 2) else parts) + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(parts)
            yield rec


def _key(item) -> str:
    """A config or history item's name (newer W&B versions fill `nested_key` instead of `key`)."""
    return item.key or ".".join(item.nested_key)


@pytest.fixture(scope="module")
def base(tmp_path_factory, compose_any):
    """A smoke SFT policy with logger=none, and a reward model from it."""
    root = tmp_path_factory.mktemp("tracking")
    run(compose_any("logger=none", "debug=smoke", "trainer.save_strategy=no"), root / "sft")
    return root


def test_logger_none_still_keeps_every_logged_step(base):
    history = _history(base / "sft")
    assert _steps(history, "train/loss") == [1, 2, 3, 4]  # debug=smoke: logging_steps=1, 4 steps
    assert _steps(history, "eval/loss") and not (base / "sft/checkpoints").exists()
    assert not (base / "sft/tb").exists() and not (base / "sft/wandb").exists()


def test_dpo_curves_and_config_in_tensorboard_under_the_history_names(base, compose, tmp_path):
    d = tmp_path / "dpo"
    art = run(compose("stage=dpo", "logger=tensorboard", "debug=smoke", f"model.init_from={base / 'sft'}",
                      "model.max_length=128", "data.on_invalid=drop", *EVAL), d)
    history = _history(d)
    assert _steps(history, "policy_eval/kl") == [2, 4]  # every 2 of the 4 optimizer steps
    assert [p["step"] for p in art.metrics["policy_eval_curve"]] == [2, 4]
    assert "policy_eval/gold_win_rate" in history[-1] or any("policy_eval/gold_win_rate" in h for h in history)
    acc = _tensorboard(d)
    scalars = set(acc.Tags()["scalars"])
    logged = {k for h in history for k, v in h.items() if k != "step" and isinstance(v, int | float)}
    assert logged <= scalars, logged - scalars  # one name for one number, in both places
    assert [e.step for e in acc.Scalars("policy_eval/kl")] == [2, 4]
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
    config = _tb_text(acc, "config")
    assert f"init_from: {base / 'sft'}" in config and "every_steps: 2" in config  # the framework's config
    assert "beta" in _tb_text(acc, "args")  # ...beside TRL's own arguments
    assert "policy" in _tb_text(acc, "policy_eval/samples") and "eval/samples/text_summary" in acc.Tags()["tensors"]


def test_curves_measure_against_the_training_reference_the_final_evaluation_against_evaluation_reference(
        base, compose, tmp_path):
    """DPO from the base model with a step too small to move it: the curve point's KL is against the model
    DPO trains against (the base model: ~0), the final evaluation's against `evaluation.reference` (the
    SFT policy: > 0); metrics and eval.json name each."""
    d = tmp_path / "dpo"
    art = run(compose("stage=dpo", "logger=none", "debug=smoke", "trainer.max_steps=1", "trainer.learning_rate=1e-9",
                      "trainer.eval_strategy=no", "model.max_length=128", "data.on_invalid=drop", *EVAL,
                      "evaluation.every_steps=1", f"evaluation.reference={base / 'sft'}"), d)
    m, ev = art.metrics, json.loads((d / "eval.json").read_text())
    assert m["policy_eval_curve_reference"] == art.extra["reference_dir"] != str(base / "sft")
    assert ev["reference_dir"] == m["policy_eval"]["reference_dir"] == str(base / "sft")
    (point,) = m["policy_eval_curve"]
    assert abs(point["kl"]) < 1e-3 < ev["kl"], (point["kl"], ev["kl"])


def test_ppo_writes_tensorboard_events_and_curves(base, compose, tmp_path):
    d = tmp_path / "ppo"
    run(compose("stage=ppo", "logger=tensorboard", "debug=smoke", f"model.init_from={base / 'sft'}",
                "stage.judge=vader", "stage.value_from=policy", *EVAL, "evaluation.every_steps=1"), d)
    history = _history(d)
    assert _steps(history, "objective/kl") == [1, 2] and _steps(history, "policy_eval/kl") == [1, 2]
    acc = _tensorboard(d)
    for name in ("objective/kl", "objective/scores", "policy/clipfrac", "kl_coef", "policy_eval/kl", "eval/kl"):
        assert name in acc.Tags()["scalars"], name
    assert [e.step for e in acc.Scalars("objective/kl")] == [1, 2]
    assert "total_iterations: 2" in _tb_text(acc, "config")
    from huggingface_hub import ModelCard

    assert ModelCard.load(d / "value/README.md").data.tags == ["rlhf", "ppo", "value"]  # the critic has a card too


def test_grpo_wandb_run_has_the_whole_config_its_stage_and_curves(base, cli, tmp_path):
    d = tmp_path / "grpo"
    res = cli("stage=grpo", "logger=wandb", "debug=smoke", f"model.init_from={base / 'sft'}",
              "stage.reward_funcs=[vader]", *EVAL[1:], "evaluation.every_steps=1", f"run_dir={d}",
              env={"WANDB_MODE": "offline"})
    assert res.returncode == 0, res.stderr[-3000:]
    (wrun,) = (d / "wandb").glob("offline-run-*")
    records = list(_wandb_records(wrun))
    (run_rec,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run_rec.job_type == "grpo" and run_rec.run_group == "default"
    config = {_key(i) for i in run_rec.config.update} | {
        _key(i) for r in records if r.WhichOneof("record_type") == "config" for i in r.config.update}
    assert {"stage", "model", "data", "evaluation", "trainer"} <= config  # the framework's, composed
    assert {"num_generations", "beta", "learning_rate"} <= config  # TRL's arguments
    logged = {_key(i) for r in records if r.WhichOneof("record_type") == "history" for i in r.history.item}
    names = {k for h in _history(d) for k, v in h.items() if k != "step" and isinstance(v, int | float)}
    singles = {"train/train_runtime", "train/train_samples_per_second", "train/train_steps_per_second",
               "train/train_loss", "train/total_flos"}  # transformers puts these in the run summary
    assert names - singles <= logged, (names - singles) - logged
    assert {"policy_eval/kl", "policy_eval/gold_policy", "train/reward"} <= names
    assert len(list((d / "wandb").rglob("*policy_eval/samples*.table.json"))) == 2  # a table per point


def test_rloo_curves_with_lora_against_the_disabled_adapter(base, compose, tmp_path):
    art = run(compose("stage=rloo", "logger=none", "debug=smoke", f"model.init_from={base / 'sft'}", "peft=lora",
                      "stage.reward_funcs=[vader]", *EVAL, "evaluation.every_steps=1"), tmp_path / "rloo")
    curve = art.metrics["policy_eval_curve"]
    assert [p["step"] for p in curve] == [1, 2] and all("gold_win_rate" in p for p in curve)
    assert _steps(_history(tmp_path / "rloo"), "policy_eval/kl") == [1, 2]


def test_curves_are_refused_under_deepspeed_before_training(base, compose, tmp_path):
    """DPO and PPO evaluate across ranks (tests/distributed/test_scale_out.py, ZeRO-3 launches); the others are refused."""
    with pytest.raises(UserError, match="evaluation.every_steps.*stage=dpo and stage=ppo, not stage=simpo"):
        run(compose("stage=simpo", "logger=none", "debug=smoke", "deepspeed=zero2", f"model.init_from={base / 'sft'}",
                    "data.on_invalid=drop", "model.max_length=128", *EVAL), tmp_path / "simpo")
    assert not (tmp_path / "simpo").exists()
