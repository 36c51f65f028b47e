"""Run one stage (or `rlhf check`) from a composed config: validate, then dispatch.

`rlhf.cli` calls it for a single stage, `rlhf.pipeline` for each step; tests and other Python code
call it directly: `run_stage(compose(...), run_dir)` -> the stage's Artifact (a report for check).
Raises UserError for user mistakes.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from . import config
from .stages import lookup


def validate(cfg: DictConfig) -> None:
    """Every problem of `cfg` for the stage it picks (`rlhf.stages.lookup`), as one UserError."""
    config.validate(cfg, lookup(cfg.stage))


def run_stage(cfg: DictConfig, run_dir: str | Path | None = None):
    validate(cfg)
    if cfg.mode == "check":
        from .stages import check

        return check.run(cfg)
    try:
        return lookup(cfg.stage).run(cfg, Path(run_dir or cfg.run_dir))
    except BaseException:
        from .tracking import abort_run

        abort_run()  # a W&B run left open would swallow the next stage's logging in this process
        raise
