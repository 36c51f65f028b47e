"""Stage hand-off: every stage run is one directory that becomes an artifact when `artifact.json` appears.

Layout of a finished run directory::

    config.yaml      the resolved config of the run
    status.json      running | failed (with the error) | finished
    model/           the model in Hugging Face format (safetensors) + tokenizer + README.md (model card)
    adapter/         the PEFT adapter, when trained with LoRA/QLoRA (+ its model card)
    rm-<name>        a reward model only: a link to model/ that names it in TRL (`rlhf.run.portable`)
    metrics.json     the stage's final metrics
    history.jsonl    one JSON object per logged step (`rlhf.tracking`), whatever the logger
    artifact.json    the manifest, written last and atomically: its presence means "finished"

A crash leaves no artifact.json, so a half-written directory never looks finished, and
`read_artifact` refuses it with the reason.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..distributed import is_main
from ..errors import RunFailed, UserError
from . import runs

MANIFEST = "artifact.json"
FORMAT_VERSION = 1
KINDS = ("policy", "reward", "data", "eval")


@dataclass
class Artifact:
    stage: str
    kind: str  # policy | reward | data (generated preference data) | eval (an evaluation only)
    model_dir: str | None  # relative to the run dir; None for data/eval artifacts
    base_model: str  # the pretrained model at the root of the lineage
    tokenizer_dir: str | None
    adapter_dir: str | None = None
    # the model the adapter applies to: the weights this run started from (the init_from artifact's
    # model dir, or base_model); None without an adapter
    adapter_base: str | None = None
    # the runs that made this model, oldest first, this one last: [{"stage", "run_dir", "data"}]
    lineage: list[dict[str, Any]] = field(default_factory=list)
    config_hash: str = ""
    code_version: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    # stage-specific hand-offs: reference_dir (policy trained against a reference), data_file (data)
    extra: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION
    run_dir: str = ""  # filled in when read; not stored

    def path(self, rel: str | None) -> Path | None:
        return None if rel is None else Path(self.run_dir) / rel


def strict_json(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, ±inf) replaced by None: JSON has no such numbers, and
    Python's `NaN` literal breaks every other reader (jq, JavaScript, W&B's summary)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def _json_text(obj: Any) -> str:
    return json.dumps(strict_json(obj), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write strict JSON (non-finite numbers as null) to a temp file in the same folder, then rename:
    readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(_json_text(obj))
    os.replace(tmp, path)


def write_artifact(run_dir: Path, artifact: Artifact) -> Path:
    """metrics.json, then the manifest, published exclusively: a run dir that gained an artifact.json
    meanwhile (another process finished there) is refused, never overwritten."""
    artifact.created = artifact.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    artifact.code_version = artifact.code_version or code_version()
    data = asdict(artifact)
    data.pop("run_dir")
    final = Path(run_dir) / MANIFEST
    if final.exists():
        raise RunFailed(f"run_dir {run_dir}: another run published {MANIFEST} here while this one ran; "
                        "nothing of it was overwritten")
    write_json_atomic(Path(run_dir) / "metrics.json", artifact.metrics)
    tmp = final.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(_json_text(data))
    try:
        os.link(tmp, final)  # atomic and exclusive: fails if the name exists
    except FileExistsError:
        raise RunFailed(f"run_dir {run_dir}: another run published {MANIFEST} here while this one ran; "
                        "nothing of it was overwritten") from None
    finally:
        tmp.unlink(missing_ok=True)
    return final


def read_artifact(run_dir: str | Path, expect_kinds: tuple[str, ...] | None = None, what: str = "model.init_from") -> Artifact:
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise UserError(f"{what}: {run_dir} does not exist (expected the run directory of an earlier stage)")
    manifest = run_dir / MANIFEST
    if not manifest.is_file():
        st = runs.read_status(run_dir, what)
        why = f" (status: {st['status']}{': ' + str(st['error']) if st.get('error') else ''})" if st else ""
        raise UserError(f"{what}: {run_dir} has no {MANIFEST}: that run did not finish{why}")
    from .integrity import check_model_files

    art = parse_manifest(manifest, what)
    art.run_dir = str(run_dir)
    if expect_kinds is not None and art.kind not in expect_kinds:
        raise UserError(
            f"{what}: {run_dir} holds a {art.kind} {'model' if art.kind in ('policy', 'reward') else 'artifact'} "
            f"(stage {art.stage}); this stage needs a {' or '.join(expect_kinds)} artifact"
        )
    if expect_kinds is not None:  # about to be loaded: damaged or non-finite files are refused here
        check_model_files(art, what)
    return art


def parse_manifest(manifest: Path, what: str) -> Artifact:
    """The Artifact in `manifest`, or a UserError saying how the file is damaged."""
    from .integrity import json_object

    data = json_object(manifest, what)
    problems = []
    for key, types in (("stage", str), ("kind", str), ("base_model", str), ("model_dir", (str, type(None))),
                       ("tokenizer_dir", (str, type(None))), ("adapter_dir", (str, type(None))),
                       ("metrics", dict), ("extra", dict)):
        if key not in data and key not in ("adapter_dir", "metrics", "extra"):
            problems.append(f"`{key}` is missing")
        elif key in data and not isinstance(data[key], types):
            problems.append(f"`{key}` is {data[key]!r}")
    if not problems and data["kind"] not in KINDS:
        problems.append(f"`kind` {data['kind']!r} is not one of {', '.join(KINDS)}")
    if problems:
        raise UserError(f"{what}: {manifest} is damaged: {'; '.join(problems)}")
    return Artifact(**{k: v for k, v in data.items() if k in Artifact.__dataclass_fields__ and k != "run_dir"})


def config_hash(cfg_container: dict) -> str:
    """Hash of what determines a run's result (paths, logging and run naming excluded)."""
    volatile = {"run_dir", "paths", "logger", "hydra", "mode", "assets_dir", "launch", "sweep_objective", "resume"}
    stable = {k: v for k, v in cfg_container.items() if k not in volatile}
    blob = json.dumps(stable, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def code_version() -> str:
    from .. import __version__

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{__version__}+{sha}{'.dirty' if dirty else ''}" if sha else __version__


class RunDir:
    """Owns one stage run directory: refuses a finished one, records status, cleans up a refused run.

    Used as a context manager around the stage. On a UserError raised before anything was trained
    the directory is removed again if this run created it; on a crash status.json says `failed`.
    Under a multi-process launch only rank 0 creates, updates or removes it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        self.config_hash: str | None = None  # recorded in status.json: what a resume is checked against
        # Hydra may already have created the dir and a log file: still "ours" if nothing else is there.
        self.created_here = runs.is_fresh(self.path)
        if (self.path / MANIFEST).exists():
            raise UserError(
                f"run_dir {self.path} already holds a finished run ({MANIFEST}); "
                "pick a new run_dir instead of overwriting it"
            )
        if is_main():  # the lock is held until the run ends; a directory in use is refused
            runs.claim_run_dir(self.path, named_by_time=False)

    def release(self) -> None:
        if is_main():
            runs.release(self.path)

    def __enter__(self) -> RunDir:
        if is_main():  # several processes, one run: rank 0 owns the directory
            self.path.mkdir(parents=True, exist_ok=True)
            status = self.path / runs.STATUS
            self._status_before = status.read_bytes() if status.is_file() else None  # an interrupted run's
            self._status("running")
        return self

    def _status(self, status: str, error: str | None = None) -> None:
        write_json_atomic(self.path / runs.STATUS, runs.status_record(status, error, config_hash=self.config_hash))

    def _final_status(self, status: str, error: str) -> None:
        """The status a failed run ends with, written even on a full disk: atomically if it can, else in
        place (status.json's own block is freed and reused), never raising over the run's own error."""
        try:
            self._status(status, error)
            return
        except OSError:
            (self.path / f".{runs.STATUS}.tmp").unlink(missing_ok=True)
        try:
            (self.path / runs.STATUS).write_text(_json_text(runs.status_record(status, error, config_hash=self.config_hash)))
        except OSError:  # status.json then reads "running" by a gone pid: `read_status` says interrupted
            pass

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not is_main():
            return False
        try:
            if exc_type is None:
                self._status("finished")
            elif (issubclass(exc_type, UserError) and not issubclass(exc_type, RunFailed) and self.created_here
                  and not (self.path / "model").exists()):
                import shutil

                shutil.rmtree(self.path, ignore_errors=True)
            elif (issubclass(exc_type, UserError) and not issubclass(exc_type, RunFailed)
                  and getattr(self, "_status_before", None) is not None):
                # a relaunch refused before it trained (e.g. other data): the interrupted run stays as it was
                tmp = self.path / f".{runs.STATUS}.tmp"
                tmp.write_bytes(self._status_before)
                os.replace(tmp, self.path / runs.STATUS)
            elif (issubclass(exc_type, KeyboardInterrupt) or exc_type.__name__ == "Interrupted") \
                    and not (self.path / MANIFEST).exists():  # a signal (rlhf.run.preemption): resumable
                self._final_status("interrupted", str(exc) or "interrupted by SIGINT (Ctrl-C)")
            elif issubclass(exc_type, Exception) and not (self.path / MANIFEST).exists():
                from . import diskfull

                if diskfull.cause(exc, self.path) is not None:
                    diskfull.quiet_logging()
                    self._final_status("failed", diskfull.message(exc, self.path))
                else:
                    self._final_status("failed", f"{exc_type.__name__}: {exc}")
        finally:
            self.release()
        return False
