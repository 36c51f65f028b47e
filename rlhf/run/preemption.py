"""Preemption is a checkpoint: SIGTERM, SIGUSR1 and Ctrl-C stop a training run at the next step
boundary, with a checkpoint of that step, status `interrupted`, and an exit the scheduler understands.

- SIGTERM (what SLURM, Kubernetes and `kill` send before SIGKILL) and SIGUSR1 (what SLURM sends
  early with `#SBATCH --signal=USR1@120`): the handler only records the signal; the trainer
  checks it at its next step boundary (TRL: `PreemptionCallback.on_step_end`; our PPO: after each
  iteration), writes a checkpoint of that step and raises `Interrupted`. Under several processes
  the ranks agree at each boundary (`agreed`, one small all-gather), so all stop at the same step.
- SIGINT (Ctrl-C): the same, once; a second Ctrl-C stops at once (KeyboardInterrupt, still recorded
  as `interrupted`: the newest complete checkpoint is what a relaunch resumes).
- The CLI prints one line and exits 128 + the signal number (143 SIGTERM, 138 SIGUSR1, 130 SIGINT):
  the shell's "ended by signal N" convention, so a batch script (`launch/slurm.sbatch`) or `&&`
  chain sees an unfinished run, never success. Relaunching the same command resumes it.

Outside `handling()` (before training starts, after it ends) the default handlers stay in place:
a signal then ends the process as usual, and the newest complete checkpoint is what resumes.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

log = logging.getLogger(__name__)

SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
_requested: list[int] = []  # the signal numbers received while handling, in order


class Interrupted(Exception):  # noqa: N818 (the run's state, as status.json says it)
    """A run stopped on a signal after writing a checkpoint of its last step (status `interrupted`)."""

    def __init__(self, signum: int, checkpoint: str | None):
        self.signum, self.checkpoint = signum, checkpoint
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint}" if checkpoint else "its newest complete checkpoint"
        super().__init__(f"interrupted by {name}: saved {where}; relaunch the same command to resume")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def requested() -> int | None:
    """The first signal received while handling (None when none was)."""
    return _requested[0] if _requested else None


def agreed() -> int | None:
    """`requested()` of any rank (collective: every rank calls it at the same step boundary), so all
    ranks of a multi-process run stop at one step; a single process asks no one."""
    from .. import distributed

    if distributed.world_size() == 1:
        return requested()
    return next((s for s in distributed.all_gather(requested()) if s is not None), None)


def _handler(signum, frame):
    if signum == signal.SIGINT and _requested:  # a second Ctrl-C: stop now
        raise KeyboardInterrupt
    if not _requested:
        log.warning("%s received: stopping at the next step boundary with a checkpoint", signal.Signals(signum).name)
    _requested.append(signum)


@contextlib.contextmanager
def handling():
    """Within: SIGTERM, SIGUSR1 and SIGINT request a stop at the next step boundary (main thread only:
    Python delivers signals there; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    before = {}
    for name in SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            before[sig] = signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)


def callback():
    """A TrainerCallback: at the step boundary after a signal, log and save that step and stop."""
    from transformers import TrainerCallback

    class PreemptionCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if agreed() is not None:
                control.should_log = True  # the steps since the last log are not lost
                control.should_save = True
                control.should_training_stop = True
            return control

    return PreemptionCallback()
