"""`load_splits`: source -> preset -> validation -> (drop or raise) -> seeded split.

The steps are shared with `preflight` through `prepare`, which never raises for a bad row: it
returns every row with its problems, and the caller decides (raise one error, drop, or report).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlhf.errors import UserError

from .config import DataConfig
from .presets import PRESETS
from .rows import Item, Problem, RowError, valid_rows
from .sources import read_source
from .split import split_indices
from .tokens import Encoded, truncation_problems
from .validate import invalid_error, mark_duplicates, normalize, reason_counts, row_key


@dataclass
class Splits:
    """Validated canonical rows, split; `dropped` says how many rows were dropped and why."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    kind: str
    source: str
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows (first problem of each row)
    n_raw: int = 0  # raw records read (lines, or trees for oasst_trees), after max_rows


@dataclass
class Prepared:
    """Every converted row with its problems, before anything is dropped."""

    items: list[Item]
    n_raw: int


def prepare(cfg: DataConfig) -> Prepared:
    """Read, convert and schema-check every row, flag duplicates; problems are attached, not raised."""
    raw = read_source(cfg.source, cfg.hf_split, cfg.max_rows)
    if not raw:
        raise UserError(f"data.source: {cfg.source} has no rows")
    convert = PRESETS[cfg.format]
    items: list[Item] = []
    for origin, record in raw:
        try:
            if isinstance(record, RowError):
                raise record
            rows = convert(record)
        except RowError as e:
            items.append(Item(origin, None, [e.problem]))
            continue
        for row in rows:
            clean, problems = normalize(row, cfg.kind)
            items.append(Item(origin, clean, problems))
    if cfg.dedupe:
        mark_duplicates(items)
    return Prepared(items, len(raw))


def mark_truncated(
    items: list[Item],
    kind: str,
    tokenizer: Any,
    max_length: int,
    side: str,
    encoded: Encoded | None = None,
) -> None:
    """Flag `truncated_empty` on valid items; `encoded` (from `encode_rows` on them) saves a pass."""
    valid = [item for item in items if item.ok]
    found: dict[int, Problem] = truncation_problems(
        valid_rows(valid), kind, tokenizer, max_length, side, encoded
    )
    for i, problem in found.items():
        valid[i].problems.append(problem)


def load_splits(
    cfg: DataConfig,
    tokenizer: Any = None,
    max_length: int | None = None,
    truncation_side: str = "right",
) -> Splits:
    """Validated train/eval rows; raises one UserError for all bad rows unless cfg.on_invalid == "drop".

    Pass the tokenizer and max_length the trainer will use to also catch rows that truncation
    would leave with nothing to learn; `truncation_side` is "right" for SFT (the end is cut) and
    "left" where prompts lose their start (reward models).
    """
    prepared = prepare(cfg)
    items = prepared.items
    if tokenizer is not None and max_length is not None:
        mark_truncated(items, cfg.kind, tokenizer, max_length, truncation_side)
    if cfg.on_invalid == "error" and any(item.problems for item in items):
        raise invalid_error(items, cfg.source)
    good = valid_rows(items)
    if not good:
        raise UserError(f"data.source: {cfg.source}: no valid rows left after dropping invalid ones")
    train_idx, eval_idx = split_indices(
        [row_key(r) for r in good], cfg.eval_fraction, cfg.eval_rows, cfg.seed
    )
    return Splits(
        train=[good[i] for i in train_idx],
        eval=[good[i] for i in eval_idx],
        kind=cfg.kind,
        source=cfg.source,
        dropped=reason_counts(items),
        n_raw=prepared.n_raw,
    )
