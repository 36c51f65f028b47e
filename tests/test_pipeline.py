"""The one-command pipeline (real `rlhf` processes): every step runs, a re-run skips finished steps,
and an interrupted stage resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

SMOKE = ["debug=smoke", "logger=none", "evaluation.max_prompts=8", "evaluation.generation.max_new_tokens=16"]


@pytest.mark.slow
def test_demo_pipeline_runs_every_step_then_skips_them_on_rerun(cli, tmp_path):
    first = cli("pipeline=demo", *SMOKE)
    assert first.returncode == 0, first.stderr[-3000:]
    pdir = tmp_path / "runs" / "demo" / "pipeline"
    for step in ("sft", "generate", "reward", "dpo", "ppo", "grpo"):
        assert (pdir / step / "artifact.json").is_file(), step
    summary = json.loads((pdir / "summary.json").read_text())
    for step in ("dpo", "ppo", "grpo"):  # every aligned policy evaluated the same way
        assert (pdir / step / "eval.json").is_file(), step
        assert "kl" in summary[step]["policy_eval"] and "gold_policy" in summary[step]["policy_eval"], step
    # the online stages were trained on the pipeline's reward model, not on a stand-in
    for step in ("ppo", "grpo"):
        assert str(pdir / "reward") in (pdir / step / "config.yaml").read_text()
    assert "KL(policy || reference)" in first.stdout and "PPO 2 iterations" in first.stdout

    mtime = (pdir / "dpo" / "artifact.json").stat().st_mtime
    second = cli("pipeline=demo", *SMOKE)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("skipped (already done)") == 6
    assert (pdir / "dpo" / "artifact.json").stat().st_mtime == mtime

    # a changed step config is refused, not silently overwritten
    third = cli("pipeline=demo", *SMOKE, "seed=7")
    assert third.returncode == 2 and "different config" in third.stderr and "Traceback" not in third.stderr


    # `make frontier`: the audit reward model (a second one, seed 7, as the Makefile trains it), one Hydra
    # sweep over the three methods on the demo's artifacts, then the frontier report
    audit = tmp_path / "runs" / "demo" / "audit_reward"
    made = cli("stage=reward", "data=generated", f"data.source={pdir}/generate/data.jsonl", f"model.init_from={pdir}/sft",
               "model.max_length=128", "seed=7", "experiment_name=demo", *SMOKE, f"run_dir={audit}")
    assert made.returncode == 0, made.stderr[-3000:]
    sweep = tmp_path / "sweep"
    multi = cli("-m", "experiment=demo_dpo,demo_ppo,demo_grpo", "leash=1,2", *SMOKE, f"hydra.sweep.dir={sweep}")
    assert multi.returncode == 0, multi.stderr[-3000:]
    report = cli("report", str(sweep), "--no-wandb")
    assert report.returncode == 0, report.stderr[-2000:]
    rows = json.loads((sweep / "frontier.json").read_text())
    assert sorted((r["method"], r["knob"]) for r in rows) == [
        ("dpo", "β=0.5"), ("dpo", "β=1"), ("grpo", "β=0.04"), ("grpo", "β=0.08"), ("ppo", "target=3"),
        ("ppo", "target=6")]
    # the frontier presets' gold is per-sentence VADER, and every point is scored by the audit model too
    assert {r["judge"] for r in rows} == {"rlhf.judges.vader_sentences"}
    assert all(r["audit_policy"] is not None for r in rows)
    assert str(audit) in (sweep / "0" / "config.yaml").read_text()
    assert (sweep / "frontier.png").is_file()

    # Optuna tunes DPO beta and learning rate on the same artifacts: each trial returns its gold score
    # (sweep_objective), the study keeps the best; W&B groups the trials as one sweep; the report reads them.
    optuna = tmp_path / "optuna"
    smoke = [o for o in SMOKE if not o.startswith("logger=")]
    opt = cli("-m", "experiment=demo_dpo_optuna", *smoke, "logger=wandb", "logger.mode=disabled",
              "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={optuna}")
    assert opt.returncode == 0, opt.stderr[-3000:]
    trials = [(yaml.safe_load((optuna / n / "config.yaml").read_text()),
               json.loads((optuna / n / "eval.json").read_text())) for n in ("0", "1")]
    best = yaml.safe_load((optuna / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(ev["gold_policy"] for _, ev in trials))
    winner = max(trials, key=lambda t: t[1]["gold_policy"])[0]["trainer"]
    assert best["best_params"] == pytest.approx({"trainer.beta": winner["beta"], "trainer.learning_rate": winner["learning_rate"]})
    assert trials[0][0]["trainer"]["beta"] != trials[1][0]["trainer"]["beta"]  # Optuna proposed two settings
    assert {c["logger"]["group"] for c, _ in trials} == {"demo_dpo_optuna/optuna"}
    report = cli("report", str(optuna), "--no-wandb")
    assert report.returncode == 0, report.stderr[-2000:]
    assert len(json.loads((optuna / "frontier.json").read_text())) == 2


def test_pipeline_with_a_typo_in_a_later_step_fails_before_training(cli, tmp_path):
    res = cli("pipeline=demo", *SMOKE, "pipeline.steps.3.overrides=['stage=dpo','data=generated','trainer.bta=1']")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "bta" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "runs" / "demo" / "pipeline" / "sft" / "artifact.json").exists()


@pytest.mark.slow
def test_interrupted_stage_resumes_from_its_last_checkpoint(tmp_path):
    run_dir = tmp_path / "sft"
    args = [str(Path(sys.executable).parent / "rlhf"), "logger=none", f"run_dir={run_dir}", "trainer.max_steps=12",
            "trainer.save_steps=3", "trainer.eval_strategy=no", "trainer.per_device_train_batch_size=64",
            "trainer.logging_steps=1", "stage.eval_before=false"]
    env = {**os.environ, "RLHF_RUNS_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr.log").open("w"), start_new_session=True)
    ckpt = run_dir / "checkpoints" / "checkpoint-3" / "trainer_state.json"
    deadline = time.time() + 300
    while not ckpt.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # let the checkpoint finish writing
    assert proc.poll() is None, f"the run ended before it could be killed: {(tmp_path / 'stderr.log').read_text()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)  # a crash: no clean-up code runs
    proc.wait()
    assert ckpt.is_file(), "no checkpoint written before the kill"
    assert not (run_dir / "artifact.json").exists()  # a killed run never looks finished

    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming from" in res.stdout + res.stderr
    assert (run_dir / "artifact.json").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_runtime_s"] is not None
