"""`load_splits`: source -> preset -> validation -> encoding -> (drop or raise) -> seeded split by prompt.

The steps are shared with `preflight` through `stream.scan`, which never raises for a bad row: it
counts and logs every problem, and the caller decides (raise one error, drop, or report). Given
an encoder (`rlhf.data.encode`), the rows are also turned into the exact features the trainer
consumes, and a row the encoder cannot make trainable is a `truncated_empty` problem: what
validation accepts is what the trainer trains on, row for row (`Ledger`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.errors import UserError

from .config import DataConfig
from .encode import Encoder
from .heldout import REASON, held_out, shared_prompts_error
from .rows import valid_rows
from .spill import Rows, Spill, WorkDir
from .stream import scan

log = logging.getLogger(__name__)


@dataclass
class Ledger:
    """Every row accounted for: read -> rows -> invalid (by reason) -> valid = train + eval.

    `truncated_*` count valid rows that lost tokens at max_length (and are trained on what is
    kept); `trained` / `evaluated` are filled in by the stage with the lengths of the datasets its
    trainer holds (for the online RL stages: the distinct prompts)."""

    read: int  # raw records (lines, or trees for oasst_trees), after max_rows
    rows: int  # canonical rows they gave (a tree gives many)
    dropped: dict[str, int]  # invalid rows by the reason of their first problem (data.on_invalid=drop)
    valid: int  # = rows - sum(dropped) = train + eval
    train: int
    eval: int
    truncated_train: int = 0
    truncated_eval: int = 0
    trained: int | None = None
    evaluated: int | None = None
    prompts_train: int = 0  # distinct prompts per side (data.split_by, `split.prompt_key`)
    prompts_eval: int = 0
    prompts_shared: int = 0  # distinct prompts on both sides: 0 under split_by=prompt

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Splits:
    """Validated canonical rows, split, and (with an encoder) the trainer's features of each.

    `train` / `eval` are `Rows` (sequences of row dicts, in file order); `train_features` /
    `eval_features` are `datasets.Dataset`s to hand to a trainer as they are."""

    train: Rows
    eval: Rows
    kind: str
    source: str
    ledger: Ledger
    train_features: Any = None  # datasets.Dataset, or None without an encoder
    eval_features: Any = None
    conversational: bool = False
    fingerprint: str = ""  # content hash of the records read (`stream.Tally.fingerprint`)

    @property
    def dropped(self) -> dict[str, int]:
        return self.ledger.dropped

    @property
    def n_raw(self) -> int:
        return self.ledger.read


def load_splits(cfg: DataConfig, encoder: Encoder | None = None, tokenizer: Any = None, *,
                workdir: str | Path | None = None, progress: bool = True) -> Splits:
    """Validated train/eval rows; raises one UserError for all bad rows unless cfg.on_invalid == "drop".

    With `encoder` (built on the tokenizer and max_length the trainer uses) every valid row is
    encoded, rows the trainer could not learn from are invalid too, and `train_features` /
    `eval_features` hold what the trainer is to be given. Memory stays bounded at any size: rows
    are processed in chunks (`rlhf.data.stream`) and the valid ones written to Arrow files in a
    temporary directory under `workdir` (default: the system's, $TMPDIR), removed once the returned
    rows and datasets are gone. Rows are `Rows` sequences (decoded on access), features
    memory-mapped `datasets.Dataset`s."""
    spill = Spill(WorkDir(workdir))
    tally = scan(cfg, encoder, tokenizer, sink=spill, split_keys=cfg.eval_split is None and cfg.split_by == "row",
                 progress=progress)
    problems = tally.problems
    if cfg.on_invalid == "error" and problems.rows:
        raise problems.error(tally.rows, cfg.source)
    if not tally.valid:
        raise UserError(f"data.source: {cfg.source}: no valid rows left after dropping invalid ones")
    if tally.negative_margin[0]:
        from .preflight import negative_margin_warning

        log.warning("%s: %s", cfg.source, negative_margin_warning(tally))
    held = held_out(cfg, tally)
    if held.examples and cfg.on_invalid == "error":
        raise shared_prompts_error(cfg, held)
    dropped = dict(problems.dropped)
    if not held.keep.all():
        dropped[REASON] = int(np.count_nonzero(~held.keep))
    is_eval = held.is_eval
    train, evals, train_features, eval_features = spill.finish(is_eval, held.keep)
    truncated = np.frombuffer(tally.truncated, dtype=bool) & held.keep
    ledger = Ledger(
        read=tally.read, rows=tally.rows, dropped=dropped, valid=int(held.keep.sum()),
        train=len(train), eval=len(evals),
        truncated_train=int(np.count_nonzero(truncated & ~is_eval)),
        truncated_eval=int(np.count_nonzero(truncated & is_eval)),
        prompts_train=held.prompts_train, prompts_eval=held.prompts_eval,
        prompts_shared=0 if held.examples and not held.keep.all() else held.prompts_shared,
    )
    return Splits(train=train, eval=evals, kind=cfg.kind, source=cfg.source, ledger=ledger,
                  conversational=tally.conversational, train_features=train_features, eval_features=eval_features,
                  fingerprint=tally.fingerprint)


__all__ = ["Ledger", "Rows", "Splits", "load_splits", "valid_rows"]
