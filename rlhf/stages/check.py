"""`rlhf check ...`: preflight a data config without training or loading a model.

Reports row counts per split, invalid rows by reason, duplicates, token-length quantiles, the
share truncated at `model.max_length` and near-identical pairs: curate the data before a GPU-hour.
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    from rlhf.data import DataConfig, format_preflight, preflight

    from ..models import load_tokenizer, resolve_source

    data_cfg = DataConfig.from_mapping(OmegaConf.to_container(cfg.data, resolve=True))
    source, _ = resolve_source(cfg.model, ("policy", "reward"))
    tokenizer = load_tokenizer(cfg.model, source)
    report = preflight(data_cfg, tokenizer=tokenizer, max_length=int(cfg.model.max_length))
    print(format_preflight(report))
    if cfg.get("check_out"):
        with open(cfg.check_out, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"report written to {cfg.check_out}")
    return report
