"""`rlhf check ...`: preflight a data config without training or loading a model.

The rows go through the stage's own encoder (`encoder(cfg, tokenizer)` of the stage module), so the
report describes exactly what that stage would train on: row counts per split, invalid rows by
reason (truncation that leaves a row nothing to learn included), duplicates, token-length
quantiles, the share truncated at `model.max_length` under the stage's real rule, the share of
tokens that carry loss (SFT), near-identical pairs. And the memory each process will need for the
model states under the chosen ZeRO stage, offload and world size (`deepspeed=...`,
`launch.world_size`), counted from the model config: learn that a job will not fit before it waits
in a queue. Exits 2 when rows are invalid under `data.on_invalid=error`, so CI can gate on it.
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig

from ..errors import UserError
from ..memory import estimate, format_estimate, model_size, zero_setup

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    from rlhf.data import format_preflight, preflight

    from ..models import load_tokenizer, resolve_source
    from . import lookup
    from .inputs import data_config

    data_cfg = data_config(cfg.data)
    source, _ = resolve_source(cfg.model, ("policy", "reward"))
    tokenizer = load_tokenizer(cfg.model, source)
    report = preflight(data_cfg, lookup(cfg.stage).encoder(cfg, tokenizer))
    memory = memory_report(cfg, source)
    report["memory"] = memory
    print(format_preflight(report))
    print(format_estimate(memory))
    if cfg.get("check_out"):
        with open(cfg.check_out, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"report written to {cfg.check_out}")
    bad = report["invalid"]["total"]
    if bad and data_cfg.on_invalid == "error":
        raise UserError(f"{bad} of {report['rows']} rows from {data_cfg.source} are invalid (see the report above); "
                        "fix them, or set data.on_invalid=drop to drop them")
    shared = report["split"].get("eval_rows_shared", 0)
    if shared and data_cfg.eval_split and data_cfg.on_invalid == "error":  # load_splits refuses the same
        raise UserError(f"{shared} rows of data.eval_split {data_cfg.eval_split!r} have a prompt the training split "
                        "trains on (see the report above); set data.on_invalid=drop to drop them")
    if not report["split"]["train"]:
        raise UserError(f"no valid training rows in {data_cfg.source} (see the report above): training would stop")
    return report


def memory_report(cfg: DictConfig, source: str) -> dict:
    """Per-process model-state memory for this stage, model, ZeRO setup and world size."""
    import torch

    gpu_bytes = None
    if cfg.launch.gpu_memory_gb is not None:
        gpu_bytes = int(float(cfg.launch.gpu_memory_gb) * 2**30)
    elif torch.cuda.is_available():
        gpu_bytes = torch.cuda.get_device_properties(0).total_memory
    from . import facts

    stage = facts(cfg.stage)  # what the stage builds, and whether it holds a reference model
    size = model_size(source, cfg.model, cfg.peft, stage.model)
    return estimate(size, zero_setup(cfg.get("deepspeed")), int(cfg.launch.world_size), stage.reference,
                    cfg.peft.method, precompute_ref=bool(cfg.trainer.get("precompute_ref_log_probs")),
                    gpu_memory_bytes=gpu_bytes)
