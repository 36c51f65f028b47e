"""Resuming an interrupted run, honestly.

- `last_complete_checkpoint`: the newest checkpoint that was fully written. transformers writes a
  checkpoint's files in place and `trainer_state.json` last, so a kill during the write leaves a
  `checkpoint-N` with weights but no state; `get_last_checkpoint` would pick it and the resume
  would die. Incomplete ones are skipped (and removed: nothing can resume from them).
- `check_relaunch`: a run dir holding checkpoints is resumed only by the config that wrote them
  (same `config_hash`); another config is refused with the keys that differ, unless
  `resume.allow_config_change=true`, which is then recorded in the manifest.
- `train`: resume (or start) a TRL trainer under the non-finite guard and return whole-run totals:
  `train_loss` over every step (transformers' covers only the steps since the resume); the whole
  run's per-step log goes to `log_history.json` in the run dir.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..errors import UserError

log = logging.getLogger(__name__)

_STEP = re.compile(r"^(?:checkpoint|iter)-(\d+)$")
# Any one of these makes a checkpoint's weights loadable (full, sharded, LoRA, DeepSpeed).
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin",
           "pytorch_model.bin.index.json", "latest")


def checkpoints(ckpt_dir: Path) -> list[Path]:
    """`checkpoint-N` (TRL) and `iter-N` (our PPO) folders, newest first."""
    if not Path(ckpt_dir).is_dir():
        return []
    found = [p for p in Path(ckpt_dir).iterdir() if p.is_dir() and _STEP.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP.match(p.name).group(1)), reverse=True)


def checkpoint_problem(path: Path) -> str | None:
    """Why a TRL `checkpoint-N` cannot be resumed from; None when it is complete."""
    state = path / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json: its write was interrupted"
    try:
        st = json.loads(state.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"trainer_state.json is damaged ({e})"
    step = int(_STEP.match(path.name).group(1))
    if not isinstance(st, dict) or st.get("global_step") != step:
        return f"trainer_state.json is not the state of step {step}"
    if not any((path / w).exists() for w in WEIGHTS):
        return "no model weights"
    if not list(path.glob("rng_state*.pth")) and (path / "optimizer.pt").exists():
        return "no RNG state"
    return damaged_file(path)


def damaged_file(path: Path) -> str | None:
    """The first file of checkpoint `path` that is cut short or unreadable (a kill or a full disk during
    the write), said as "<file>: <why>"; None when every weight and state file reads. Cheap: headers and
    sizes (safetensors), the central directory (torch's zip files), JSON parses; no tensor is loaded."""
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        try:
            if f.suffix == ".safetensors":
                why = _safetensors_problem(f)
            elif f.suffix in (".pt", ".pth", ".bin"):
                import zipfile

                why = None if zipfile.is_zipfile(f) else "not a complete torch file (its zip directory is missing)"
            elif f.suffix == ".json":
                json.loads(f.read_text(encoding="utf-8"))
                why = None
            else:
                why = None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            why = f"unreadable ({e})"
        if why:
            return f"{f} is damaged: {why}"
    return None


def _safetensors_problem(f: Path) -> str | None:
    size = f.stat().st_size
    with open(f, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a safetensors header"
        n = int.from_bytes(head, "little")
        if n > size - 8:
            return f"its header claims {n} bytes but the file holds {size}"
        header = json.loads(fh.read(n))
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        return f"truncated: {size} bytes of {8 + n + end}"
    return None


def set_aside(path: Path, why: str) -> Path:
    """Move a damaged checkpoint to `<run_dir>/damaged-checkpoints/<name>` (kept for inspection, outside
    checkpoints/ which a finished run removes; never resumed from)."""
    aside = path.parent.parent / "damaged-checkpoints"
    aside.mkdir(exist_ok=True)
    target, n = aside / path.name, 1
    while target.exists():
        target, n = aside / f"{path.name}.{n}", n + 1
    path.rename(target)
    log.warning("checkpoint %s is damaged (%s): set aside as %s", path, why, target)
    return target


def last_complete_checkpoint(ckpt_dir: Path, remove_incomplete: bool = True) -> Path | None:
    """The newest complete `checkpoint-N` in `ckpt_dir` (None when there is none); incomplete ones newer
    than it are removed (logged), so a resumed run writes its next checkpoint into a clean folder."""
    found = checkpoints(ckpt_dir)
    for path in found:
        why = checkpoint_problem(path)
        if why is None:
            return path
        if " is damaged: " in why and remove_incomplete:  # written whole, then damaged: kept aside, named
            set_aside(path, why)
            continue
        log.warning("not resuming from %s: %s%s", path, why, "; removing it" if remove_incomplete else "")
        if remove_incomplete:
            shutil.rmtree(path, ignore_errors=True)
    if found and remove_incomplete:
        log.warning("no intact checkpoint left in %s: starting over from step 0", ckpt_dir)
    return None


def check_relaunch(cfg, run_dir: Path) -> dict[str, Any] | None:
    """Refuse to resume `run_dir`'s checkpoints under a config other than the one that wrote them.

    Returns None (nothing to resume, or the same config) or, when `resume.allow_config_change` let a
    different config through, what changed (for the manifest). Raises UserError otherwise.
    """
    from .artifacts import config_hash
    from .runs import read_status

    found = checkpoints(Path(run_dir) / "checkpoints")
    if not found:
        return None
    now_cfg = OmegaConf.to_container(cfg, resolve=True)
    now = config_hash(now_cfg)
    st = read_status(run_dir) or {}
    before_cfg = _saved_config(Path(run_dir))
    before = st.get("config_hash") or (config_hash(before_cfg) if before_cfg is not None else None)
    if before == now:
        return None
    changed = _changed_keys(before_cfg, now_cfg) if before_cfg is not None else []
    what = (f"run_dir {run_dir} holds an interrupted run ({found[0].name}) "
            + (f"made with another config (config_hash {before} != {now}"
               + (f"; changed: {', '.join(changed[:8])}" if changed else "") + ")"
               if before else "whose config is unknown (no config.yaml or status.json)"))
    allow = bool(OmegaConf.select(cfg, "resume.allow_config_change", default=False))
    if not allow:
        raise UserError(f"{what}. Relaunch it with the same config to resume, pick a new run_dir to start over, or "
                        "set resume.allow_config_change=true to resume under the new config (recorded in the manifest)")
    log.warning("%s: resuming under the new config (resume.allow_config_change=true)", what)
    if (Path(run_dir) / "config.yaml").is_file():  # keep what the first part of the run trained with
        shutil.copyfile(Path(run_dir) / "config.yaml", Path(run_dir) / "config.before_resume.yaml")
    return {"config_changed": True, "config_hash_before": before, "changed_keys": changed}


def _saved_config(run_dir: Path) -> dict | None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # a damaged config.yaml: the hash in status.json may still say it
        log.warning("cannot read %s: %s", path, e)
        return None


def _changed_keys(before: dict, now: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, with both values (volatile roots such as run_dir left out)."""
    skip = {"run_dir", "paths", "logger", "hydra", "mode", "assets_dir", "launch", "sweep_objective", "resume"}
    out = []
    for key in sorted(set(before) | set(now), key=str):
        if not prefix and key in skip:
            continue
        a, b = before.get(key, "<unset>"), now.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} -> {b!r}")
    return out


def train(trainer, cfg, run_dir: Path):
    """`trainer.train()`, resumed from the newest complete checkpoint in `run_dir/checkpoints`, under the
    non-finite guard (`cfg.nonfinite`). Returns transformers' TrainOutput with whole-run totals:
    `training_loss` = metrics["train_loss"] over every step of the run; metrics also carry
    `resumed_from_step` and `num_tokens_at_resume` after a resume, and `nonfinite_skipped_steps`."""
    from transformers.trainer_utils import TrainOutput

    from .. import distributed
    from .guards import NonFiniteGuard

    ckpt = distributed.on_main(last_complete_checkpoint, Path(run_dir) / "checkpoints")
    guard = NonFiniteGuard(cfg.nonfinite.policy, int(cfg.nonfinite.max_consecutive)).attach(trainer)
    if ckpt is not None:
        guard.restore(ckpt)
        log.info("resuming from %s", ckpt)
    from . import preemption

    trainer.add_callback(preemption.callback())  # a signal: checkpoint at the next step, then stop
    with preemption.handling():
        out = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
        sig = preemption.requested()
    if sig is not None and trainer.state.global_step < trainer.state.max_steps:
        saved = distributed.on_main(last_complete_checkpoint, Path(run_dir) / "checkpoints", False)
        raise preemption.Interrupted(sig, str(saved) if saved is not None else None)
    if distributed.is_main():  # the per-step curve of the whole run (a resumed state carries the earlier steps)
        from .artifacts import write_json_atomic

        write_json_atomic(Path(run_dir) / "log_history.json", trainer.state.log_history)
    step = trainer.state.global_step
    metrics = {**out.metrics, "train_loss": guard.train_loss(step), "train_steps": step}
    if ckpt is not None:
        metrics["resumed_from_step"] = int(_STEP.match(ckpt.name).group(1))
        metrics["num_tokens_at_resume"] = guard.num_tokens
    if guard.guard.skipped:
        metrics["nonfinite_skipped_steps"] = guard.guard.skipped
    return TrainOutput(step, metrics["train_loss"], metrics)
