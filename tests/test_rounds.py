"""Rounds of a pipeline (rlhf/pipeline/rounds.py): iterative DPO and rejection sampling as ordinary steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf.errors import UserError
from rlhf.pipeline.rounds import expand, wall_lines


def _steps(compose, *overrides):
    cfg = compose(*overrides)
    return {s.name: s for s in expand(cfg.pipeline)}


def test_iterative_dpo_rounds_chain_the_policy_over_fresh_prompt_shards(compose):
    steps = _steps(compose, "pipeline=iterative_dpo", "rounds=3")
    assert list(steps) == [f"round{r}_{s}" for r in (1, 2, 3) for s in ("generate", "dpo")]
    # round 1 starts from the demo's SFT model, each later round from the previous round's DPO policy
    assert any(o.endswith("demo/pipeline/sft") and o.startswith("model.init_from=") for o in steps["round1_dpo"].overrides)
    assert steps["round2_generate"].init_from == steps["round2_dpo"].init_from == "round1_dpo"
    assert steps["round3_dpo"].data_from == "round3_generate"
    offsets = [o for r in (1, 2, 3) for o in steps[f"round{r}_generate"].overrides if "prompt_offset" in o]
    assert offsets == ["stage.prompt_offset=0", "stage.prompt_offset=256", "stage.prompt_offset=512"]
    assert not any(o.startswith("stage.reference=") for o in steps["round2_dpo"].overrides)  # reference=current
    initial = _steps(compose, "pipeline=iterative_dpo", "rounds=2", "reference=initial")
    assert any(o.startswith("stage.reference=") and o.endswith("demo/pipeline/sft") for o in initial["round2_dpo"].overrides)


def test_rejection_sampling_rounds_and_bad_round_settings(compose):
    steps = _steps(compose, "pipeline=rejection_sampling", "rounds=2")
    assert list(steps) == [f"round{r}_{s}" for r in (1, 2) for s in ("generate", "sft", "eval")]
    assert "stage.output=best" in steps["round2_generate"].overrides and steps["round2_generate"].init_from == "round1_sft"
    assert steps["round2_eval"].init_from == "round2_sft"
    with pytest.raises(UserError, match="rounds >= 1, got 0"):
        _steps(compose, "pipeline=iterative_dpo", "rounds=0")
    with pytest.raises(UserError, match="reference: expected one of current, initial"):
        _steps(compose, "pipeline=iterative_dpo", "reference=sft")


def test_wall_time_per_round():
    results = {"sft": {"wall_s": 3}, "round1_generate": {"wall_s": 5.2}, "round1_dpo": {"wall_s": 10},
               "round2_generate": {"skipped": True}, "round2_dpo": {"wall_s": 7}}
    assert wall_lines(results) == ["round 1: 15 s (generate 5 s + dpo 10 s)", "round 2: 7 s (generate 0 s + dpo 7 s)"]


@pytest.mark.slow
def test_rounds_run_skip_when_finished_and_draw_one_frontier_line(cli, tmp_path):
    pdir = tmp_path / "runs" / "rounds_smoke" / "pipeline"
    refused = cli("pipeline=rounds_smoke", "rounds=0", "logger=none")
    assert refused.returncode == 2 and "rounds >= 1" in refused.stderr and "Traceback" not in refused.stderr
    assert not pdir.exists()
    # killed in round 1's DPO step (a crash: no clean-up runs), then relaunched: it goes on from there
    args = [str(Path(sys.executable).parent / "rlhf"), "pipeline=rounds_smoke", "rounds=1", "logger=none"]
    env = {**os.environ, "RLHF_RUNS_DIR": str(tmp_path / "runs"), "WANDB_MODE": "offline"}
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (pdir / "round1_dpo" / "config.yaml").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the pipeline ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (pdir / "round1_dpo" / "artifact.json").exists()
    gen_mtime = (pdir / "round1_generate" / "artifact.json").stat().st_mtime
    first = cli("pipeline=rounds_smoke", "rounds=1", "logger=none")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("skipped (already done)") == 2  # sft, round1_generate: on at round 1's dpo step
    assert (pdir / "round1_generate" / "artifact.json").stat().st_mtime == gen_mtime
    mtime = (pdir / "round1_dpo" / "artifact.json").stat().st_mtime
    second = cli("pipeline=rounds_smoke", "rounds=2", "logger=none")  # one more round: the first is not redone
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("skipped (already done)") == 3  # sft, round1_generate, round1_dpo
    assert (pdir / "round1_dpo" / "artifact.json").stat().st_mtime == mtime
    cfg2 = (pdir / "round2_dpo" / "config.yaml").read_text()
    assert str(pdir / "round1_dpo") in cfg2 and "prompt_offset: 16" in (pdir / "round2_generate/config.yaml").read_text()
    p1 = {json.loads(line)["prompt"] for line in (pdir / "round1_generate/samples.jsonl").read_text().splitlines()}
    p2 = {json.loads(line)["prompt"] for line in (pdir / "round2_generate/samples.jsonl").read_text().splitlines()}
    assert p1 and p2 and not p1 & p2  # each round a fresh shard of prompts
    third = cli("pipeline=rounds_smoke", "rounds=2", "logger=none")
    assert third.returncode == 0 and third.stdout.count("skipped (already done)") == 5
    report = cli("report", str(pdir), "--no-wandb")
    assert report.returncode == 0, report.stderr[-2000:]
    rows = json.loads((pdir / "frontier.json").read_text())
    assert sorted((r["method"], r["knob"]) for r in rows) == [("rounds_smoke", "round 1"), ("rounds_smoke", "round 2")]
    # every round measured against the SFT model, so the rounds' KL lie on one axis; eval.json says so
    assert f"reference: {pdir / 'sft'}" in cfg2
    assert json.loads((pdir / "round2_dpo" / "eval.json").read_text())["reference_dir"] == str(pdir / "sft")


def test_demo_dir_on_the_command_line_reaches_every_round_step(tmp_path):
    """`rlhf pipeline=iterative_dpo demo_dir=<dir>`: the generate step's config does not declare
    `demo_dir` (was: "Could not override 'demo_dir'" before anything ran); every step now composes and
    the rounds start from, and score with, that directory's artifacts."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from rlhf.cli import register_resolvers
    from rlhf.pipeline import step_configs
    from rlhf.resources import CONFIG_MODULE

    register_resolvers()
    demo = tmp_path / "elsewhere"
    overrides = ["pipeline=iterative_dpo", "rounds=2", f"demo_dir={demo}", "logger=none", f"paths.runs_dir={tmp_path}"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            steps = step_configs(compose("config", overrides=overrides), overrides)
    finally:
        GlobalHydra.instance().clear()
    assert [name for name, _ in steps] == ["round1_generate", "round1_dpo", "round2_generate", "round2_dpo"]
    gen = dict(steps)["round1_generate"]
    assert gen.model.init_from == str(demo / "sft") and gen.stage.reward_model == str(demo / "reward")
