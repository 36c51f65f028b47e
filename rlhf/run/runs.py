"""One run, one directory: which process owns a run directory, and whether it still lives.

- `claim(path)`: an exclusive lock on `<run_dir>/.rlhf.lock` (`fcntl.flock`), held until the run
  ends or its process dies, however it dies (the kernel drops the lock even after `kill -9`).
  A second process that wants the same directory finds the lock taken.
- `claim_run_dir(path, named_by_time)`: the directory this run owns. A name that came from the clock
  (`${now:...}`) becomes the first free one of `<name>`, `<name>-1`, `<name>-2`, ... (each created
  with an exclusive `mkdir`), so two runs started in the same second never share a directory; a name
  the user chose is locked as it is (an interrupted run there is resumed, a live one refused).
- `status_record` / `read_status`: status.json carries the host and pid of the process that wrote
  it; a reader turns "running" into "interrupted" when that process is gone (same host only: a pid
  on another machine cannot be checked from here).

Only rank 0 of a multi-process run claims and writes; the others follow its choice
(`rlhf.distributed.agree_on_run_dir`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from ..errors import UserError

LOCK = ".rlhf.lock"
STATUS = "status.json"
MAX_SUFFIX = 1000  # `<name>-1` ... `<name>-999`: far more same-second launches than any machine makes

_held: dict[str, int] = {}  # resolved run dir -> fd of its lock, for the locks this process holds


def is_fresh(path: Path) -> bool:
    """True when `path` holds nothing but log files and this process's own lock: nothing a run has
    written yet. (Another process's lock means the directory is that run's, however empty.)"""
    path = Path(path)
    if not path.is_dir():
        return True
    ours = str(path.resolve()) in _held
    return all(p.suffix == ".log" or (p.name == LOCK and ours) for p in path.iterdir())


def claim(path: str | Path) -> bool:
    """Lock `path` (created if missing) for this process; False when another process holds it."""
    path = Path(path).resolve()
    key = str(path)
    if key in _held:
        return True
    path.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock on this platform: the exclusive mkdir of `claim_run_dir` still holds
        _held[key] = -1
        return True
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held[key] = fd
    return True


def release(path: str | Path) -> None:
    """Give up this process's lock on `path` (the lock file stays: removing it would race a waiter)."""
    fd = _held.pop(str(Path(path).resolve()), None)
    if fd is not None and fd >= 0:
        os.close(fd)


def claim_run_dir(path: Path, named_by_time: bool) -> Path:
    """The run directory this process owns: `path`, or for a clock-made name the first free sibling.

    Raises UserError when a name the user chose is in use by a live process.
    """
    path = Path(path).resolve()
    if not named_by_time:
        if not claim(path):
            raise UserError(f"run_dir {path}: in use by another run{_holder(path)}; wait for it or pick "
                            "another run_dir")
        return path
    for n in range(MAX_SUFFIX):
        candidate = path if n == 0 else path.with_name(f"{path.name}-{n}")
        if n > 0:
            try:
                candidate.mkdir(parents=True)  # exclusive: exactly one process creates each name
            except FileExistsError:
                continue
        if claim(candidate):
            if is_fresh(candidate):
                return candidate
            release(candidate)  # a run of the same second that already ended here: not ours
    raise UserError(f"run_dir: {MAX_SUFFIX} runs named {path} already exist; set run_dir explicitly")


def own_hydra_run_dir(cfg, hydra_dir: Path) -> Path:
    """The run dir of this Hydra job, owned by this process: Hydra made `hydra_dir` before any of our
    code ran, from the clock (`${now:...}` in run_dir, hydra.run.dir or the default sweep dir) or from
    a name the user chose. A clock-made one already taken by another run of the same second becomes
    `<name>-1`, ...; the log file follows it and `cfg.run_dir` says where it went."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    given = dict(o.split("=", 1) for o in hc.overrides.task if "=" in o)
    given = {k.lstrip("+~"): v for k, v in given.items()}
    if hc.mode == RunMode.MULTIRUN:
        template = given.get("hydra.sweep.dir", "${now:")  # the default sweep dir carries the clock
    else:
        template = given.get("hydra.run.dir") or str(OmegaConf.to_container(cfg, resolve=False).get("run_dir"))
    why = taken_because(Path(hydra_dir))
    owned = claim_run_dir(hydra_dir, named_by_time="${now:" in template)
    if owned != Path(hydra_dir).resolve():
        move_file_logs(hydra_dir, owned)
        logging.getLogger(__name__).warning("run dir %s %s: using %s", hydra_dir, why or taken_because(Path(hydra_dir)),
                                            owned)
    # config.yaml records the directory really used (a sweep member's too, not the run_dir template)
    OmegaConf.update(cfg, "run_dir", str(owned), merge=False)
    return owned


def taken_because(path: Path) -> str:
    """Why `path` is not free for a new run: what is already there (said in the log beside a suffix)."""
    path = Path(path)
    if (path / "artifact.json").exists():
        return "already holds a finished run (artifact.json)"
    try:
        st = read_status(path)
    except UserError:
        st = {"status": "unknown (damaged status.json)"}
    if st:
        return f"already holds another run (status {st['status']})"
    if (path / LOCK).exists() and str(path.resolve()) not in _held:
        return "is in use by another run started in the same second"
    return "is taken by another run started in the same second"


def move_file_logs(old: Path, new: Path) -> None:
    """Point the logging file handlers that write into `old` (Hydra's rlhf.log) at `new` instead."""
    old, new = Path(old).resolve(), Path(new).resolve()
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == old:
            h.acquire()
            try:
                if h.stream is not None:
                    h.stream.close()
                    h.stream = None  # reopened lazily, at the new place
                h.baseFilename = str(new / Path(h.baseFilename).name)
            finally:
                h.release()


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def status_record(status: str, error: str | None = None, **extra: Any) -> dict[str, Any]:
    """What status.json holds: the status, when, and which process on which host wrote it."""
    obj: dict[str, Any] = {"status": status,
                           "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                           "host": socket.gethostname(), "pid": os.getpid()}
    started = _start_time(os.getpid())
    if started is not None:
        obj["pid_started"] = started
    if error:
        obj["error"] = error
    obj.update({k: v for k, v in extra.items() if v is not None})
    return obj


def process_gone(st: dict[str, Any]) -> bool:
    """True when the process that wrote status `st` is known to be gone (same host only)."""
    pid, host = st.get("pid"), st.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    started = st.get("pid_started")
    return started is not None and _start_time(pid) not in (None, started)


def read_status(run_dir: str | Path, what: str = "run_dir") -> dict[str, Any] | None:
    """status.json of a run dir (None when absent); "running" becomes "interrupted" when the process
    that wrote it is gone. A file that is not a JSON object is a UserError naming it."""
    path = Path(run_dir) / STATUS
    if not path.is_file():
        return None
    try:
        st = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{what}: {path} is damaged (not valid JSON: {e}); that run's state is unknown, "
                        "so it cannot be used") from None
    if not isinstance(st, dict) or not isinstance(st.get("status"), str):
        raise UserError(f"{what}: {path} is damaged (expected an object with a `status`, got {str(st)[:80]!r})")
    if st["status"] == "running" and process_gone(st):
        st["status"] = "interrupted"
        st["error"] = f"its process (pid {st['pid']} on {st['host']}) is gone: killed or crashed"
    return st


def _holder(path: Path) -> str:
    try:
        st = read_status(path)
    except UserError:
        return ""
    if not st or "pid" not in st:
        return ""
    return f" (pid {st['pid']} on {st.get('host', '?')}, status {st['status']} since {st.get('time', '?')})"
