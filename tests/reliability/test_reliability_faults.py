"""kill -9 and resume for every trainable stage, a kill during a checkpoint write, a relaunch under
another config, and runs started in the same second (tests/reliability/reliability_faults.py)."""

from __future__ import annotations

import json

import pytest
from reliability_faults import RESUMABLE, complete_checkpoint, kill_and_resume, same_second, stage_args
from reliability_harness import kill_when, launch, run_inprocess, snapshot


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(RESUMABLE))
def test_kill_9_then_resume_gives_the_uninterrupted_run(stage, reliability_root, tmp_path):
    """Same per-step losses, same whole-run totals (train_loss, tokens), weights identical (0.0). For SFT a
    half-written newer checkpoint is left behind the kill as well: the resume must skip it."""
    _, fixtures = reliability_root
    trial = kill_and_resume(stage, tmp_path, fixtures, partial=(stage == "sft"))
    assert trial.survived, trial.detail
    assert trial.max_difference == 0.0


@pytest.mark.slow
def test_relaunch_under_another_config_is_refused_unless_asked(reliability_root, tmp_path):
    _, fixtures = reliability_root
    args, run = stage_args("sft", fixtures), tmp_path / "run"
    proc = launch([*args, f"run_dir={run}"], tmp_path / "runs", tmp_path / "killed.log")
    assert kill_when(proc, lambda: complete_checkpoint(run))
    before = snapshot(run)
    changed = [*args, f"run_dir={run}", "trainer.learning_rate=5e-2", "data.max_rows=100"]
    out = run_inprocess(changed, tmp_path / "runs")
    assert out.code == 2 and "holds an interrupted run" in out.stderr, out.stderr[-2000:]
    assert "trainer.learning_rate 0.0005 -> 0.05" in out.stderr and "data.max_rows 64 -> 100" in out.stderr
    assert snapshot(run) == before  # the interrupted run is untouched: config.yaml still describes it

    out = run_inprocess([*changed, "resume.allow_config_change=true"], tmp_path / "runs")
    assert out.code == 0, out.stderr[-2000:]
    manifest = json.loads((run / "artifact.json").read_text())
    assert manifest["extra"]["resume"]["config_changed"] is True
    assert any("learning_rate" in k for k in manifest["extra"]["resume"]["changed_keys"])
    assert (run / "config.before_resume.yaml").is_file()
    assert manifest["metrics"]["resumed_from_step"] >= 2 and manifest["metrics"]["train_steps"] == 6


@pytest.mark.slow
def test_runs_started_in_the_same_second_get_their_own_dirs(reliability_root, tmp_path):
    """Two runs with different configs named by the same clock reading finish in two directories;
    neither overwrote the other's model, metrics or manifest. (bench/reliability.py adds a third run
    with the first one's config.)"""
    a = ["trainer.max_steps=2", "stage.eval_before=false"]
    b = ["trainer.max_steps=3", "stage.eval_before=false"]
    dirs = same_second(tmp_path, [a, b])
    assert len(set(dirs)) == 2, dirs
    steps = [json.loads((d / "metrics.json").read_text())["train_steps"] for d in dirs]
    assert steps == [2, 3]
    for d in dirs:
        assert json.loads((d / "status.json").read_text())["status"] == "finished"
