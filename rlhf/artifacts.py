"""Stage hand-off: every stage run is one directory that becomes an artifact when `artifact.json` appears.

Layout of a finished run directory::

    config.yaml      the resolved config of the run
    status.json      running | failed (with the error) | finished
    model/           the model in Hugging Face format (safetensors) + tokenizer + README.md (model card)
    adapter/         the PEFT adapter, when trained with LoRA/QLoRA (+ its model card)
    rm-<name>        a reward model only: a link to model/ that names it in TRL (`rlhf.portable`)
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
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .distributed import is_main
from .errors import UserError

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


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def write_artifact(run_dir: Path, artifact: Artifact) -> Path:
    artifact.created = artifact.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    artifact.code_version = artifact.code_version or code_version()
    data = asdict(artifact)
    data.pop("run_dir")
    write_json_atomic(Path(run_dir) / "metrics.json", artifact.metrics)
    write_json_atomic(Path(run_dir) / MANIFEST, data)
    return Path(run_dir) / MANIFEST


def read_artifact(run_dir: str | Path, expect_kinds: tuple[str, ...] | None = None, what: str = "model.init_from") -> Artifact:
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise UserError(f"{what}: {run_dir} does not exist (expected the run directory of an earlier stage)")
    manifest = run_dir / MANIFEST
    if not manifest.is_file():
        status = run_dir / "status.json"
        why = ""
        if status.is_file():
            st = json.loads(status.read_text())
            why = f" (status: {st.get('status')}{': ' + st['error'] if st.get('error') else ''})"
        raise UserError(f"{what}: {run_dir} has no {MANIFEST}: that run did not finish{why}")
    try:
        data = json.loads(manifest.read_text())
        art = Artifact(**{k: v for k, v in data.items() if k in Artifact.__dataclass_fields__})
    except (json.JSONDecodeError, TypeError) as e:
        raise UserError(f"{what}: {manifest} is not a valid manifest: {e}") from None
    art.run_dir = str(run_dir)
    if expect_kinds is not None and art.kind not in expect_kinds:
        raise UserError(
            f"{what}: {run_dir} holds a {art.kind} {'model' if art.kind in ('policy', 'reward') else 'artifact'} "
            f"(stage {art.stage}); this stage needs a {' or '.join(expect_kinds)} artifact"
        )
    return art


def config_hash(cfg_container: dict) -> str:
    """Hash of what determines a run's result (paths, logging and run naming excluded)."""
    volatile = {"run_dir", "paths", "logger", "hydra", "mode", "assets_dir", "launch", "sweep_objective"}
    stable = {k: v for k, v in cfg_container.items() if k not in volatile}
    blob = json.dumps(stable, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def code_version() -> str:
    from . import __version__

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
        # Hydra may already have created the dir and a log file: still "ours" if nothing else is there.
        existing = [p for p in self.path.iterdir()] if self.path.is_dir() else []
        self.created_here = all(p.suffix == ".log" for p in existing)
        if (self.path / MANIFEST).exists():
            raise UserError(
                f"run_dir {self.path} already holds a finished run ({MANIFEST}); "
                "pick a new run_dir instead of overwriting it"
            )

    def __enter__(self) -> RunDir:
        if is_main():  # several processes, one run: rank 0 owns the directory
            self.path.mkdir(parents=True, exist_ok=True)
            self._status("running")
        return self

    def _status(self, status: str, error: str | None = None) -> None:
        obj = {"status": status, "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        if error:
            obj["error"] = error
        write_json_atomic(self.path / "status.json", obj)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not is_main():
            return False
        if exc_type is None:
            self._status("finished")
        elif issubclass(exc_type, UserError) and self.created_here and not (self.path / "model").exists():
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)
        elif issubclass(exc_type, (Exception, KeyboardInterrupt)):
            self._status("failed", f"{exc_type.__name__}: {exc}")
        return False
