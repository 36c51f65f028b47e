"""Preemption (rlhf.run.preemption): SIGTERM / SIGUSR1 / Ctrl-C to a real process checkpoint the step it
is on, exit 128 + the signal with one line and status `interrupted`; the relaunch resumes with the
same per-step losses as an uninterrupted run (tests/reliability/reliability_preemption.py). And a
resume onto data whose content changed is refused unless asked (rlhf.run.fingerprint)."""

from __future__ import annotations

import json
import signal

import pytest
from reliability_corpus import SFT, jsonl
from reliability_faults import complete_checkpoint
from reliability_harness import QUIET, launch, run_inprocess
from reliability_preemption import signal_and_resume, signal_when


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "sig"), [("sft", signal.SIGTERM), ("dpo", signal.SIGUSR1), ("ppo", signal.SIGTERM)])
def test_a_signal_checkpoints_and_the_relaunch_resumes_identically(stage, sig, reliability_root, tmp_path):
    _, fixtures = reliability_root
    trial = signal_and_resume(stage, sig, tmp_path, fixtures)
    assert trial.survived, trial.detail


ARGS = [*QUIET, "stage=sft", "data=jsonl", "data.kind=sft", "trainer.max_steps=10", "trainer.save_steps=2",
        "trainer.logging_steps=1", "trainer.eval_strategy=no", "stage.eval_before=false", "trainer.save_total_limit=3"]


@pytest.mark.slow
def test_ctrl_c_then_a_resume_onto_edited_data_is_refused_unless_asked(tmp_path):
    """Ctrl-C: one line, exit 130, status interrupted (not failed). Then the data file is edited: the
    relaunch is refused naming the fingerprint; allowed, the manifest records it. The newest checkpoint
    is then damaged (weights cut in half): it is named, set aside, and the run resumes from the one before."""
    data = tmp_path / "x.jsonl"
    data.write_bytes(jsonl(SFT))
    run, runs = tmp_path / "run", tmp_path / "runs"
    args = [*ARGS, f"data.source={data}", f"run_dir={run}"]
    proc = launch(args, runs, tmp_path / "int.log")
    assert signal_when(proc, lambda: complete_checkpoint(run), signal.SIGINT)
    assert proc.wait(timeout=300) == 130
    log = (tmp_path / "int.log").read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    assert [ln for ln in log.splitlines() if ln.startswith("rlhf: ")][0].startswith("rlhf: interrupted by SIGINT")
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    before = json.loads((run / "data_fingerprint.json").read_text())["fingerprint"]

    data.write_bytes(jsonl([{**SFT[0], "completion": " an edited answer."}, *SFT[1:]]))
    out = run_inprocess(args, runs)
    assert out.code == 2 and "trained on other data" in out.stderr and before in out.stderr, out.stderr[-2000:]
    assert "resume.allow_config_change=true" in out.stderr
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"  # the refusal left it as it was

    # The newest checkpoint damaged as a kill mid-write or a full disk leaves it: named, set aside, not resumed.
    newest, *older = sorted((run / "checkpoints").glob("checkpoint-*"), key=lambda p: -int(p.name.split("-")[1]))
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = run_inprocess([*args, "resume.allow_config_change=true"], runs)
    assert out.code == 0, out.stderr[-2000:]
    assert f"{weights} is damaged" in (run / "rlhf.log").read_text()  # named in the run's log
    assert (run / "damaged-checkpoints" / newest.name / "model.safetensors").is_file()  # set aside, kept
    manifest = json.loads((run / "artifact.json").read_text())
    assert manifest["metrics"]["resumed_from_step"] == int(older[0].name.split("-")[1])
    assert manifest["extra"]["resume"]["data_changed"] is True
    assert manifest["extra"]["resume"]["data_fingerprint_before"] == before
    now = manifest["extra"]["data"]["fingerprint"]
    assert now != before and manifest["lineage"][-1]["data_fingerprint"] == now
