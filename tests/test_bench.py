"""The benchmark suite's plumbing (bench/): the step clock on a real TRL run, the results table, the
GPU script's wheel check and its dry run. Timings are never asserted: they belong to `make bench`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import harness  # noqa: E402
import run as bench_run  # noqa: E402


def test_step_clock_times_every_step_and_evaluation_of_a_plain_trl_run(assets, tmp_path):
    """The peer script under the clock, as bench/run.py runs a side: one record per optimizer step,
    the evaluations timed apart, and the process CPU split into steps and fixed cost."""
    rows = [{"prompt": "Once upon a time", "completion": f" there was a cat number {i}."} for i in range(24)]
    train = harness.write_jsonl(tmp_path / "train.jsonl", rows[:16])
    held_out = harness.write_jsonl(tmp_path / "eval.jsonl", rows[16:])
    cmd = harness.peer("sft", model=assets / "models" / "stories260k", train=train, eval=held_out, out=tmp_path / "o",
                       steps=4, batch=4, max_length=64, eval_batch=1, eval_steps=2, add_bos=True)
    got = harness.run(cmd, tmp_path / "side", timeout=600)
    t = got.trainer
    assert t["class"] == "SFTTrainer" and [s[0] for s in t["steps"]] == [1, 2, 3, 4]
    assert [e["step"] for e in t["evals"]] == [2, 4, 4]  # two during training, one after
    assert all(e["metrics"]["eval_loss"] > 0 for e in t["evals"])
    steps = got.step_cpus()
    assert len(steps) == 4 and all(c > 0 for c in steps)
    assert 0 < got.train_cpu() < got.cpu and got.fixed_cpu() > 0


def test_results_table_reads_ratios_goals_and_plain_values():
    rows = [harness.Row("P1", "CPU per step", "s", 1.0, 1.0, [1.01, 0.99, 1.05], goal="<= 1.03"),
            harness.Row("P3", "pairs/s", "pairs/s", 3.0, 1.0, [2.4, 2.6], goal=">= 2.5"),
            harness.value_row("P6", "rlhf --help: wall", "s", [0.7, 2.0, 0.8], goal="<= 1.5")]
    assert [r.met for r in rows] == [True, True, True]
    assert rows[1].median == 2.5 and rows[2].ours == 0.8 and rows[2].spread == (0.7, 2.0)
    cells = bench_run.table(rows)
    assert cells[1][4] == "1.010" and cells[1][5] == "0.99-1.05" and cells[1][8] == "met"
    assert cells[3][4] == "-" and cells[3][5] == "0.7-2 s"
    md = bench_run.markdown(cells)
    assert md.count("\n") == 4 and md.startswith("| bench | measurement")


def test_wheel_check_names_missing_and_doubled_packages(tmp_path):
    import gpu_wheels

    (tmp_path / "trl-1.16.0-py3-none-any.whl").touch()
    (tmp_path / "trl-1.15.0-py3-none-any.whl").touch()
    (tmp_path / "hydra_core-1.3.8-py3-none-any.whl").touch()
    assert gpu_wheels.check(tmp_path, allow_missing=True) == 1  # two trl versions: pip would refuse
    (tmp_path / "trl-1.15.0-py3-none-any.whl").unlink()
    assert gpu_wheels.check(tmp_path, allow_missing=True) == 0
    assert gpu_wheels.check(tmp_path, allow_missing=False) == 1  # deepspeed, bitsandbytes, ... missing


@pytest.mark.slow
def test_gpu_script_dry_run_builds_and_runs_the_whole_plan_on_cpu(tmp_path):
    """bench/gpu.sh --dry-run: wheels checked, our package linked into a scratch site folder, the
    Qwen2 model and data built, every CLI step run at toy size; the JSON has each step's figures."""
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    res = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run", "--out", str(out)], env=env,
                         capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert f"rlhf from {tmp_path}" in res.stdout  # the linked checkout, not the installed package
    got = json.loads(out.read_text())
    assert got["dry_run"] is True and got["model"]["params"] > 0
    assert got["attention"]["attn_implementation"] == "sdpa"  # packed rows computed correctly
    for name in ("sft", "dpo"):
        assert got[name]["exit"] == 0 and got[name]["tokens_per_s"] > 0, got[name]
    assert got["batching_grouped"]["real_tokens_per_s"] > 0 and got["batching_packed_sdpa"]["real_tokens_per_s"] > 0
    assert got["ppo"]["rollout_tokens_per_s"] > 0
    assert got["qlora"]["exit"] == 0, got["qlora"]  # 4-bit NF4 on the CPU
