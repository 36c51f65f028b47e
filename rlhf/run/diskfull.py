"""A full disk while a run writes (a checkpoint, the model, status.json): one message naming what was
being written, status `failed`, and nothing half-written that a relaunch would resume from.

The error reaches us in many shapes: `OSError(ENOSPC)` from Python's own writes, a `RuntimeError`
("file write failed", "unexpected pos") from torch's zip writer, a `SafetensorError` wrapping
"No space left on device" from safetensors; each chained to the next. `cause` finds it anywhere in
the chain; `where` names the file (when an OSError carries it) or the checkpoint being written.
A partial checkpoint is never resumed from: it lacks trainer_state.json (written last) or its
files are cut short, and `rlhf.run.resume.last_complete_checkpoint` skips it either way.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

MARKS = ("No space left on device", "StorageFull")
# torch's zip writer says only "iostream error" / "unexpected pos": with the disk this nearly full it is that.
NEARLY_FULL = 1 << 20  # bytes free


def cause(exc: BaseException | None, run_dir: Path | None = None) -> BaseException | None:
    """The exception in `exc`'s chain that says the disk is full (None when none does); given
    `run_dir`, an I/O error while its filesystem has under NEARLY_FULL bytes free counts too."""
    first = exc
    if run_dir is not None and isinstance(exc, OSError | RuntimeError) and free_bytes(run_dir) < NEARLY_FULL:
        return first
    seen = set()
    found = None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return exc
        if found is None and any(m in str(exc) for m in MARKS):
            found = exc
        exc = exc.__cause__ or exc.__context__
    return found


def free_bytes(path: Path) -> int:
    import os
    import shutil

    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free if os.path.exists(path) else 1 << 62
    except OSError:
        return 1 << 62


def where(exc: BaseException, run_dir: Path) -> str:
    """The file being written when the disk filled: an OSError's filename, else the newest checkpoint
    of `run_dir` that is incomplete, else the run dir itself."""
    e = exc
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.filename:
            return str(e.filename)
        e = e.__cause__ or e.__context__
    root = Path(run_dir) / "checkpoints"
    step = lambda p: int(p.name.split("-")[-1].split(".")[0])  # noqa: E731
    # TRL writes trainer_state.json last: the newest checkpoint without one is the one being written
    partial = [p for p in root.glob("checkpoint-*") if p.is_dir() and not (p / "trainer_state.json").is_file()]
    partial += list(root.glob(".iter-*.tmp"))  # our PPO writes into a temp dir, renamed when complete
    return str(max(partial, key=step)) if partial else str(run_dir)


def message(exc: BaseException, run_dir: Path) -> str:
    return (f"no space left on device while writing {where(exc, run_dir)}: free space (or set run_dir= on a larger "
            "disk) and relaunch the same command; it resumes from the newest complete checkpoint")


def quiet_logging() -> None:
    """A full disk also fails every log line written to rlhf.log: drop those errors instead of printing
    a traceback for each."""
    logging.raiseExceptions = False
