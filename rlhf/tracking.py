"""Experiment tracking: W&B (online with a key, offline without), TensorBoard, or nothing.

Transformers' trainers do the logging (`report_to`); this module only decides the mode and the
names, through W&B's documented environment variables, so every stage is named and grouped alike.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

log = logging.getLogger(__name__)


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC", str(Path.home() / ".netrc")))
    except (OSError, netrc.NetrcParseError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    return rc.authenticators(host) is not None


def setup_reporting(logger_cfg, run_dir: Path, run_name: str) -> str:
    """Prepare the environment for the chosen logger and return the `report_to` value for TRL."""
    report_to = logger_cfg.report_to
    if report_to == "wandb":
        mode = logger_cfg.mode
        if mode == "auto":
            mode = os.environ.get("WANDB_MODE") or ("online" if wandb_api_key_configured() else "offline")
        if mode == "disabled":
            return "none"
        os.environ["WANDB_MODE"] = mode
        os.environ["WANDB_PROJECT"] = logger_cfg.project
        if logger_cfg.entity:
            os.environ["WANDB_ENTITY"] = logger_cfg.entity
        os.environ["WANDB_RUN_GROUP"] = str(logger_cfg.group)
        os.environ["WANDB_NAME"] = run_name
        os.environ["WANDB_DIR"] = str(run_dir)
        os.environ["WANDB_SILENT"] = "true"
        os.environ.setdefault("WANDB_LOG_MODEL", "false")  # artifacts are ours (run dir), not W&B's
        if logger_cfg.tags:
            os.environ["WANDB_TAGS"] = ",".join(logger_cfg.tags)
        where = f"{run_dir}/wandb" if mode == "offline" else f"project {logger_cfg.project}"
        log.info("W&B %s: run %r in group %r -> %s%s", mode, run_name, logger_cfg.group, where,
                 " (no API key configured; `wandb sync` uploads it later)" if mode == "offline" else "")
    elif report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(run_dir) / "tb")
    return report_to


def finish_run(summary: dict) -> None:
    """Put the final metrics in the W&B run summary and close it (so the next stage gets its own run)."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        for k, v in summary.items():
            if isinstance(v, int | float | str | bool):
                wandb.run.summary[k] = v
        wandb.finish()
