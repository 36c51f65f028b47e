"""What the environment must provide before a run starts: checked at validation, said in one line.

- W&B online needs an API key (`WANDB_API_KEY` or `wandb login`'s ~/.netrc entry). Without one,
  wandb raises a `UsageError` (or prompts) only once the run dir exists and the model is built;
  here it is refused before anything starts, saying how to run offline.
"""

from __future__ import annotations

import os


def wandb_mode(logger_cfg) -> str | None:
    """The W&B mode a run would use (as `rlhf.tracking.setup_reporting` decides it); None without W&B."""
    from .tracking import wandb_api_key_configured

    if logger_cfg.get("report_to") != "wandb":
        return None
    mode = logger_cfg.get("mode")
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_api_key_configured() else "offline")
    return str(mode)


def wandb_problems(logger_cfg) -> list[str]:
    from .tracking import wandb_api_key_configured

    mode = wandb_mode(logger_cfg)
    if mode in ("online", "run") and not wandb_api_key_configured():
        where = "WANDB_MODE=online" if logger_cfg.get("mode") == "auto" else f"logger.mode={logger_cfg.get('mode')}"
        return [f"logger: W&B online ({where}) needs an API key and there is none (no WANDB_API_KEY, no `wandb login`). "
                "Run offline with logger.mode=offline (or WANDB_MODE=offline; `wandb sync <run_dir>/wandb` uploads "
                "later), or without W&B: logger=none"]
    return []
