"""`rlhf check ...`: preflight a data config without training or loading a model.

Reports row counts per split, invalid rows by reason, duplicates, token-length quantiles, the
share truncated at `model.max_length` and near-identical pairs: curate the data before a GPU-hour.
And the memory each process will need for the model states under the chosen ZeRO stage, offload
and world size (`deepspeed=...`, `launch.world_size`), counted from the model config: learn that a
job will not fit before it waits in a queue.
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig, OmegaConf

from ..memory import estimate, format_estimate, model_size, zero_setup

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    from rlhf.data import DataConfig, format_preflight, preflight

    from ..models import load_tokenizer, resolve_source

    data_cfg = DataConfig.from_mapping(OmegaConf.to_container(cfg.data, resolve=True))
    source, _ = resolve_source(cfg.model, ("policy", "reward"))
    memory = memory_report(cfg, source)
    tokenizer = load_tokenizer(cfg.model, source)
    report = preflight(data_cfg, tokenizer=tokenizer, max_length=int(cfg.model.max_length))
    report["memory"] = memory
    print(format_preflight(report))
    print(format_estimate(memory))
    if cfg.get("check_out"):
        with open(cfg.check_out, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"report written to {cfg.check_out}")
    return report


def memory_report(cfg: DictConfig, source: str) -> dict:
    """Per-process model-state memory for this stage, model, ZeRO setup and world size."""
    import torch

    gpu_bytes = None
    if cfg.launch.gpu_memory_gb is not None:
        gpu_bytes = int(float(cfg.launch.gpu_memory_gb) * 2**30)
    elif torch.cuda.is_available():
        gpu_bytes = torch.cuda.get_device_properties(0).total_memory
    size = model_size(source, cfg.model, cfg.peft, cfg.stage.name)
    return estimate(size, zero_setup(cfg.get("deepspeed")), int(cfg.launch.world_size), cfg.stage.name,
                    cfg.peft.method, precompute_ref=bool(cfg.trainer.get("precompute_ref_log_probs")),
                    gpu_memory_bytes=gpu_bytes)
