"""Which valid rows are held out, and how many prompts each side has and shares (`data.split`).

`held_out(cfg, tally)` decides the split of one pass (`stream.scan`) and counts distinct prompts
per side and the prompts both sides hold. A dataset's own eval split (`data.eval_split`) is taken
as it is, but an eval row whose prompt also trains is not held out: under `data.on_invalid=error`
that is one error naming the rows (file:line), under `drop` those eval rows are dropped and
counted as `eval_prompt_in_train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rlhf.errors import UserError

from .config import DataConfig
from .split import eval_mask, prompt_eval_mask

N_LISTED = 10  # eval rows named in the error for a dataset's eval split that shares prompts with training
REASON = "eval_prompt_in_train"


@dataclass
class HeldOut:
    is_eval: np.ndarray  # per valid row
    keep: np.ndarray  # per valid row: False for an eval row dropped for sharing its prompt with training
    prompts_train: int
    prompts_eval: int
    prompts_shared: int  # distinct prompts on both sides (0 under split_by=prompt)
    eval_rows_shared: int  # eval rows whose prompt also trains (before any drop)
    examples: list[str]  # where the first of those rows are (data.eval_split)

    def counts(self) -> dict[str, int]:
        return {"prompts_train": self.prompts_train, "prompts_eval": self.prompts_eval,
                "prompts_shared": self.prompts_shared, "eval_rows_shared": self.eval_rows_shared}


def held_out(cfg: DataConfig, tally: Any) -> HeldOut:
    """The split of `tally`'s valid rows under `cfg` (see the module docstring); never raises."""
    prompts = np.frombuffer(tally.prompts, dtype=np.uint64)
    if cfg.eval_split is not None:
        is_eval = np.frombuffer(tally.is_eval, dtype=bool).copy()
    elif cfg.split_by == "prompt":
        is_eval = prompt_eval_mask(prompts, cfg.eval_fraction, cfg.eval_rows)
    else:
        is_eval = eval_mask(np.frombuffer(tally.hashes, dtype=np.uint64), cfg.eval_fraction, cfg.eval_rows)
    train_p, eval_p = np.unique(prompts[~is_eval]), np.unique(prompts[is_eval])
    shared = np.intersect1d(train_p, eval_p, assume_unique=True)
    leaked = is_eval & np.isin(prompts, shared)
    examples: list[str] = []
    keep = np.ones(len(prompts), dtype=bool)
    if cfg.eval_split is not None and leaked.any():
        positions = np.flatnonzero(leaked[is_eval])[:N_LISTED]
        examples = [tally.eval_origins[i] for i in positions]
        if cfg.on_invalid == "drop":
            keep = ~leaked
    return HeldOut(is_eval, keep, len(train_p), len(eval_p), len(shared), int(leaked.sum()), examples)


def shared_prompts_error(cfg: DataConfig, h: HeldOut) -> UserError:
    """The refusal of a dataset's eval split whose rows share prompts with the training split."""
    more = h.eval_rows_shared - len(h.examples)
    listed = [f"{where}: prompt: also a prompt of the training split {cfg.hf_split!r}" for where in h.examples]
    if more > 0:
        listed.append(f"... and {more} more")
    return UserError(listed, title=(
        f"data.eval_split: {h.eval_rows_shared} rows of split {cfg.eval_split!r} of {cfg.source} ({h.prompts_shared} "
        f"distinct prompts) have a prompt that split {cfg.hf_split!r} trains on, so they are not held out "
        "(set data.on_invalid=drop to drop those eval rows, or use eval_fraction instead of eval_split)"))

