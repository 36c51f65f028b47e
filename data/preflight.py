"""`preflight`: what a data config would give a trainer, measured before any model is built.

It runs the same reading, conversion and validation as `load_splits` but reports bad rows instead
of raising for them, and adds what decides max_length: token-length quantiles of the full texts
and the share of rows that max_length would cut. Config mistakes and missing files still raise.
"""

from __future__ import annotations

import difflib
from collections import Counter
from typing import Any

from .config import DataConfig
from .loader import mark_truncated, prepare
from .rows import Item, valid_rows
from .split import split_indices
from .tokens import encode_rows, quantiles
from .validate import row_key

N_EXAMPLES = 5  # example messages per invalid reason
# Pairs whose responses differ by a few characters teach a reward model little and are often
# label noise; difflib's ratio = 2 * matching chars / total chars, so 0.9 is "90% the same text".
NEAR_IDENTICAL = 0.9


def preflight(
    cfg: DataConfig,
    tokenizer: Any = None,
    max_length: int | None = None,
    truncation_side: str | None = None,
) -> dict[str, Any]:
    """A JSON-serialisable report; truncation_side defaults to right for sft, left for pair/ranked."""
    side = truncation_side or ("right" if cfg.kind == "sft" else "left")
    prepared = prepare(cfg)
    items = prepared.items
    tokens = None if tokenizer is None else _token_report(items, cfg.kind, tokenizer, max_length, side)
    good = valid_rows(items)
    train_idx, eval_idx = split_indices(
        [row_key(r) for r in good], cfg.eval_fraction, cfg.eval_rows, cfg.seed
    )
    report: dict[str, Any] = {
        "source": cfg.source,
        "format": cfg.format,
        "kind": cfg.kind,
        "rows_read": prepared.n_raw,
        "rows": len(items),
        "valid": len(good),
        "split": {"train": len(train_idx), "eval": len(eval_idx)},
        "invalid": _invalid_report(items),
        "duplicates": sum(1 for item in items for p in item.problems if p.reason == "duplicate"),
        "tokens": tokens,
    }
    if cfg.kind == "pair":
        report["pairs"] = {"near_identical_share": _near_identical_share(good), "threshold": NEAR_IDENTICAL}
    return report


def _token_report(
    items: list[Item], kind: str, tokenizer: Any, max_length: int | None, side: str
) -> dict[str, Any]:
    """Length quantiles of the valid rows' full texts; with max_length, flags `truncated_empty` too."""
    valid = valid_rows(items)
    encoded = encode_rows(valid, kind, tokenizer, max_length, side)
    tokens: dict[str, Any] = {
        "tokenizer": getattr(tokenizer, "name_or_path", type(tokenizer).__name__),
        "full_text": quantiles([n for row_lengths in encoded.lengths for n in row_lengths]),
    }
    if max_length is not None:
        cut = sum(1 for row_lengths in encoded.lengths if max(row_lengths) > max_length)
        tokens |= {
            "max_length": max_length,
            "truncation_side": side,
            "truncated_share": _share(cut, len(valid)),
        }
        mark_truncated(items, kind, tokenizer, max_length, side, encoded)
    return tokens


def _invalid_report(items: list[Item]) -> dict[str, Any]:
    """Invalid rows per reason (a row counts under its first problem) with a few example messages."""
    by_reason = Counter(item.problems[0].reason for item in items if item.problems)
    examples: dict[str, list[str]] = {}
    for item in items:
        if item.problems:
            found = examples.setdefault(item.problems[0].reason, [])
            if len(found) < N_EXAMPLES:
                found.append("; ".join(p.message(item.origin) for p in item.problems))
    return {
        "total": sum(by_reason.values()),
        "by_reason": dict(by_reason.most_common()),
        "examples": examples,
    }


def _share(n: int, total: int) -> float:
    return round(n / total, 4) if total else 0.0


def _near_identical_share(rows: list[dict[str, Any]]) -> float:
    """Share of pairs whose chosen and rejected texts have a difflib ratio >= NEAR_IDENTICAL."""
    close = 0
    for row in rows:
        m = difflib.SequenceMatcher(None, row["chosen"], row["rejected"], autojunk=False)
        # the cheap upper bounds rule out almost every pair before the quadratic ratio()
        if (
            m.real_quick_ratio() >= NEAR_IDENTICAL
            and m.quick_ratio() >= NEAR_IDENTICAL
            and m.ratio() >= NEAR_IDENTICAL
        ):
            close += 1
    return _share(close, len(rows))


def format_preflight(report: dict[str, Any]) -> str:
    """The report as a few readable lines for a terminal."""
    split, invalid = report["split"], report["invalid"]
    lines = [
        f"data preflight: {report['format']} -> {report['kind']} rows from {report['source']}",
        f"  read {report['rows_read']} records -> {report['rows']} rows: {report['valid']} valid "
        f"(train {split['train']}, eval {split['eval']}), {invalid['total']} invalid",
    ]
    for reason, n in invalid["by_reason"].items():
        lines.append(f"  {reason}: {n} rows, e.g.")
        lines += [f"      {msg}" for msg in invalid["examples"].get(reason, [])]
    lines.append(f"  exact duplicates: {report['duplicates']}")
    tokens = report.get("tokens")
    if tokens:
        q = tokens["full_text"]
        if q:
            lines.append(
                f"  tokens per full text ({tokens['tokenizer']}): "
                f"p50 {q['p50']}, p90 {q['p90']}, p99 {q['p99']}, max {q['max']}"
            )
        if "max_length" in tokens:
            lines.append(
                f"  rows longer than max_length {tokens['max_length']}: {tokens['truncated_share']:.1%} "
                f"(truncated on the {tokens['truncation_side']})"
            )
    pairs = report.get("pairs")
    if pairs:
        lines.append(
            f"  near-identical chosen/rejected (difflib ratio >= {pairs['threshold']}): {pairs['near_identical_share']:.1%}"
        )
    return "\n".join(lines)
