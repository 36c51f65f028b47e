"""Preemption as a scheduler does it: a real signal to a real `rlhf` process (rlhf.run.preemption), then a
relaunch. Shared by the tests and bench/reliability.py.

A signal trial runs a stage twice with one config: uninterrupted (in this process), and as a process
that gets `sig` the moment its first periodic checkpoint is complete. That process must checkpoint
the step it is on, exit 128 + sig with one line, and leave status `interrupted`; relaunched, it
must resume from that checkpoint and log the same loss at every step as the uninterrupted run.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from reliability_faults import complete_checkpoint, losses, stage_args
from reliability_harness import QUIET, launch, run_inprocess

# More steps than the kill trials' 6, so the signal lands between two periodic checkpoints.
LONGER = {"trainer.max_steps=6": "trainer.max_steps=10", "trainer.total_iterations=4": "trainer.total_iterations=6"}


@dataclass
class SignalTrial:
    stage: str
    signal: str
    survived: bool
    detail: str
    exit_code: int | None = None
    stopped_at: str | None = None


def signal_when(proc, ready, sig: int, timeout: float = 300.0) -> bool:
    """Send `sig` to `proc` the moment `ready()` is true; False when the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            proc.send_signal(sig)
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    raise TimeoutError("the run never reached its first checkpoint")


def signal_and_resume(stage: str, sig: int, root: Path, fixtures: dict[str, Path]) -> SignalTrial:
    args = [LONGER.get(a, a) for a in stage_args(stage, fixtures)]
    runs, name = root / "runs", signal.Signals(sig).name
    ref, run = root / f"{stage}-uninterrupted", root / f"{stage}-{name}"
    proc = launch([*args, f"run_dir={run}"], runs, root / f"{stage}-{name}.log")
    out = run_inprocess([*args, f"run_dir={ref}"], runs)
    if not signal_when(proc, lambda: complete_checkpoint(run), sig):
        return SignalTrial(stage, name, False, "the run ended before its first checkpoint: no signal was sent")
    code = proc.wait(timeout=600)
    log = (root / f"{stage}-{name}.log").read_text(errors="replace")
    trial = SignalTrial(stage, name, False, "", code)
    if out.code != 0:
        trial.detail = f"uninterrupted run failed: {out.stderr[-2000:]}"
        return trial
    status = json.loads((run / "status.json").read_text())
    lines = [ln for ln in log.splitlines() if ln.startswith("rlhf: ")]
    if code != 128 + sig or status["status"] != "interrupted" or "Traceback" in log or len(lines) != 1:
        trial.detail = f"exit {code}, status {status['status']!r}, {len(lines)} rlhf lines:\n{log[-3000:]}"
        return trial
    trial.stopped_at = lines[0].split("saved checkpoint ")[-1].split(";")[0]
    again = run_inprocess([*args, f"run_dir={run}"], runs)
    if again.code != 0:
        trial.detail = f"the relaunch failed: {again.stderr[-3000:]}"
        return trial
    metrics = json.loads((run / "metrics.json").read_text())
    if stage != "ppo" and f"checkpoint-{metrics.get('resumed_from_step')}" not in trial.stopped_at:
        trial.detail = f"resumed from step {metrics.get('resumed_from_step')}, not from {trial.stopped_at}"
        return trial
    same = losses(ref) == losses(run)
    trial.survived = same
    trial.detail = "" if same else f"losses differ:\n{losses(ref)}\n{losses(run)}"
    return trial


__all__ = ["QUIET", "SignalTrial", "signal_and_resume", "signal_when"]
