"""Data layer (imported as ``rlhf.data``): sources, presets, validation, split and preflight.

Stages depend on exactly this API:

    splits = load_splits(cfg, tokenizer=None, max_length=None, truncation_side="right")
    report = preflight(cfg, tokenizer=None, max_length=None)
    print(format_preflight(report))

Rows are plain dicts in one of three canonical kinds (rank 0 = best, ties allowed):
    sft:    {"prompt", "completion"} | {"messages": [{"role", "content"}, ...]} | {"text"}
    pair:   {"prompt", "chosen", "rejected", "margin"?}
    ranked: {"prompt", "responses": [...], "ranks": [...]}
This package knows nothing of Hydra or stages; bad data raises `rlhf.errors.UserError`.
"""

from .config import DataConfig
from .loader import Splits, load_splits
from .preflight import format_preflight, preflight

__all__ = ["DataConfig", "Splits", "format_preflight", "load_splits", "preflight"]
