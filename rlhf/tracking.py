"""Experiment tracking: W&B (online with a key, offline without), TensorBoard, or nothing, and a
per-step history in the run dir whatever the logger.

Transformers' trainers log their own metrics (`report_to`) through their W&B / TensorBoard callbacks
under the same names (`rewrite_logs`: `train/loss`, `eval/loss`); this module decides the mode and
the names through W&B's documented environment variables (so every stage is named, grouped and
typed, `job_type` = the stage, alike), opens the W&B run itself with the whole composed config, and
writes what the trainers do not log (PPO's iterations, the policy-vs-reference evaluation, the
config as text for TensorBoard) through one `Tracker`, under one name on W&B, TensorBoard and in
`history.jsonl` (one JSON object per logged step: ``{"step": N, name: value, ...}``).
"""

from __future__ import annotations

import json
import logging
import netrc
import os
from pathlib import Path
from typing import Any

HISTORY = "history.jsonl"
STEP = "train/global_step"  # the x-axis transformers' W&B callback defines; ours too

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


def wandb_mode(logger_cfg) -> str | None:
    """The W&B mode a run would use (as `rlhf.tracking.setup_reporting` decides it); None without W&B."""
    if logger_cfg.get("report_to") != "wandb":
        return None
    mode = logger_cfg.get("mode")
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_api_key_configured() else "offline")
    return str(mode)


def wandb_problems(logger_cfg) -> list[str]:
    """W&B online needs an API key (`WANDB_API_KEY` or `wandb login`'s ~/.netrc entry): without one wandb
    raises a `UsageError` (or prompts) only once the run dir exists; refused at validation instead,
    saying how to run offline."""
    mode = wandb_mode(logger_cfg)
    if mode in ("online", "run") and not wandb_api_key_configured():
        where = "WANDB_MODE=online" if logger_cfg.get("mode") == "auto" else f"logger.mode={logger_cfg.get('mode')}"
        return [f"logger: W&B online ({where}) needs an API key and there is none (no WANDB_API_KEY, no `wandb login`). "
                "Run offline with logger.mode=offline (or WANDB_MODE=offline; `wandb sync <run_dir>/wandb` uploads "
                "later), or without W&B: logger=none"]
    return []


def setup_reporting(logger_cfg, run_dir: Path, run_name: str, job_type: str | None = None) -> str:
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
        if job_type:
            os.environ["WANDB_JOB_TYPE"] = job_type
        os.environ["WANDB_SILENT"] = "true"
        os.environ.setdefault("WANDB_LOG_MODEL", "false")  # artifacts are ours (run dir), not W&B's
        if logger_cfg.tags:
            os.environ["WANDB_TAGS"] = ",".join(logger_cfg.tags)
        where = f"{run_dir}/wandb" if mode == "offline" else f"project {logger_cfg.project}"
        log.info("W&B %s: run %r in group %r -> %s%s", mode, run_name, logger_cfg.group, where,
                 " (no API key configured; `wandb sync` uploads it later)" if mode == "offline" else "")
    elif report_to == "tensorboard":
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            from .errors import UserError

            raise UserError("logger=tensorboard needs the tensorboard package: pip install tensorboard")
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


def abort_run() -> None:
    """Close a W&B run a failed stage left open (exit code 1), so the next stage in this process gets
    its own run."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1)


def _scalar(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class Tracker:
    """One run's metrics, under one name each, to `history.jsonl` (always), TensorBoard event files
    in `<run_dir>/tb` (logger=tensorboard) and the W&B run (logger=wandb). `active=False` (ranks
    other than 0): does nothing."""

    def __init__(self, run_dir: Path, report_to: str, active: bool = True):
        self.path, self.report_to, self.active = Path(run_dir) / HISTORY, report_to, active
        self.last_step = 0
        self._tb = None

    def start(self, config: dict) -> None:
        """Open the W&B run with the whole composed config (the trainers' callbacks add their own
        arguments to it) and write that config to TensorBoard as text."""
        if not self.active:
            return
        if self.report_to == "wandb":
            import wandb

            if wandb.run is None:  # name, group, job_type, project, dir, mode: setup_reporting's variables
                wandb.init(config=config)
            else:
                wandb.config.update(config, allow_val_change=True)
            wandb.define_metric(STEP)
            wandb.define_metric("*", step_metric=STEP, step_sync=True)
        import yaml

        self.text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def _writer(self):
        if self._tb is None and self.report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.path.parent / "tb"))
        return self._tb

    def log(self, metrics: dict[str, Any], step: int, *, to_loggers: bool = True) -> None:
        """One history line; with `to_loggers` also TensorBoard scalars and a W&B step (a TRL stage's own
        metrics are already there, through the trainer's callbacks)."""
        if not self.active:
            return
        self.last_step = max(self.last_step, int(step))
        row = {k: v for k, v in metrics.items() if _scalar(v) or isinstance(v, str | bool)}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": int(step), **row}) + "\n")
        if not to_loggers:
            return
        scalars = {k: v for k, v in row.items() if _scalar(v)}
        if self._writer() is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, int(step))
            self._tb.flush()
        if self.report_to == "wandb":
            import wandb

            if wandb.run is not None:
                wandb.log({**scalars, STEP: int(step)})

    def text(self, name: str, markdown: str, step: int) -> None:
        if self.active and self._writer() is not None:
            self._tb.add_text(name, markdown, int(step))
            self._tb.flush()

    def table(self, name: str, rows: list[dict], step: int) -> None:
        """A W&B table, and the same rows as a markdown table in TensorBoard's text tab."""
        if not self.active or not rows:
            return
        cols = list(rows[0])
        if self.report_to == "wandb":
            import wandb

            if wandb.run is not None:
                wandb.log({name: wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows]),
                           STEP: int(step)})
        cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
        self.text(name, "\n".join(lines), step)

    def log_eval(self, result: dict, prefix: str, step: int, summary: bool = False) -> None:
        """A policy-vs-reference evaluation (`rlhf.evaluation.evaluate_policy`): its scalars as
        `<prefix>/<name>`, its samples as the table `<prefix>/samples`."""
        scalars = {f"{prefix}/{k}": v for k, v in result.items() if _scalar(v)}
        self.log(scalars, step)
        self.table(f"{prefix}/samples", result.get("samples") or [], step)
        if summary and self.active and self.report_to == "wandb":
            import wandb

            if wandb.run is not None:
                for k, v in scalars.items():
                    wandb.run.summary[k] = v

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def history_callback(tracker: Tracker):
    """A TrainerCallback that writes every `trainer.log` to `history.jsonl` under the names the
    trainer's W&B and TensorBoard callbacks give them (`train/loss`, `eval/loss`, ...)."""
    from transformers import TrainerCallback
    from transformers.integrations.integration_utils import rewrite_logs

    class History(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                tracker.log(rewrite_logs(logs), state.global_step, to_loggers=False)

    return History()
