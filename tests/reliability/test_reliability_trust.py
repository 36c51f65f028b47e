"""The config-as-code boundary: a `_target_` in an override runs nothing; a run dir in use by a live
process is refused, whoever asks for it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from reliability_harness import QUIET, run_inprocess


def test_a_nested_target_in_an_override_runs_nothing(tmp_path):
    src, dst = tmp_path / "secret.txt", tmp_path / "copied.txt"
    src.write_text("x")
    out = run_inprocess([*QUIET, "peft=lora", "+peft.lora.init._target_=shutil.copy", f"+peft.lora.init.src={src}",
                         f"+peft.lora.init.dst={dst}", f"run_dir={tmp_path / 'run'}"], tmp_path / "runs")
    assert out.code == 2 and "peft.lora.init._target_" in out.stderr, out.stderr[-2000:]
    assert not dst.exists() and not (tmp_path / "run").exists()


def test_lora_still_builds_its_peft_config(tmp_path):
    from omegaconf import OmegaConf
    from peft import LoraConfig

    from rlhf.trust import build_peft_config

    cfg = OmegaConf.create({"method": "lora", "lora": {"_target_": "peft.LoraConfig", "r": 4, "target_modules": ["q_proj"]}})
    built = build_peft_config(cfg, "CAUSAL_LM")
    assert isinstance(built, LoraConfig) and built.r == 4 and built.target_modules == {"q_proj"}


def test_a_run_dir_a_live_process_holds_is_refused(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from rlhf.run import runs
        from rlhf.run.artifacts import RunDir
        rd = RunDir({str(run)!r}); rd.__enter__()
        print("held", flush=True); time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in run.iterdir())
        out = run_inprocess([*QUIET, f"run_dir={run}"], tmp_path / "runs")
        assert out.code == 2 and "in use by another run" in out.stderr and f"pid {holder.pid}" in out.stderr, out.stderr
        assert sorted(p.name for p in run.iterdir()) == before
    finally:
        holder.kill()
        holder.wait()
