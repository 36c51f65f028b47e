"""`preflight`: what a data config would give a trainer, measured before any model is built.

It runs the same reading, conversion, validation and encoding as `load_splits` (the stage's own
encoder: the same token ids, the same truncation rule) but reports bad rows instead of raising for
them, and adds what decides max_length: token-length quantiles, the share of rows max_length cuts,
and for SFT the share of tokens that carry loss. Config mistakes and missing files still raise.
"""

from __future__ import annotations

import difflib
from collections import Counter
from typing import Any

import numpy as np

from .config import DataConfig
from .encode import Encoder
from .loader import encode_items, prepare
from .rows import Item
from .split import split_indices
from .validate import row_key

N_EXAMPLES = 5  # example messages per invalid reason
# Pairs whose responses differ by a few characters teach a reward model little and are often
# label noise; difflib's ratio = 2 * matching chars / total chars, so 0.9 is "90% the same text".
NEAR_IDENTICAL = 0.9


def preflight(cfg: DataConfig, encoder: Encoder | None = None) -> dict[str, Any]:
    """A JSON-serialisable report of the rows `load_splits(cfg, encoder)` would give a trainer."""
    prepared = prepare(cfg, getattr(encoder, "tok", None))
    if encoder is not None:
        encode_items(prepared, encoder, cfg.source)
    items = prepared.items
    good = [i for i, item in enumerate(items) if item.ok]
    train_idx, eval_idx = split_indices([row_key(items[i].row) for i in good], cfg.eval_fraction, cfg.eval_rows,
                                        cfg.seed)
    report: dict[str, Any] = {
        "source": cfg.source,
        "format": cfg.format,
        "kind": cfg.kind,
        "on_invalid": cfg.on_invalid,
        "conversational": prepared.conversational,
        "rows_read": prepared.n_raw,
        "rows": len(items),
        "valid": len(good),
        "split": {"train": len(train_idx), "eval": len(eval_idx)},
        "invalid": _invalid_report(items),
        "duplicates": sum(1 for item in items for p in item.problems if p.reason == "duplicate"),
        "tokens": None if encoder is None else _token_report(prepared.encoded, encoder),
        "warnings": [],
    }
    if prepared.plain_rows_with_template:
        report["warnings"].append(
            f"{prepared.plain_rows_with_template} rows are plain text although the tokenizer has a chat template: "
            "they are trained as plain text (TRL's standard format); set data.conversational=true to wrap each "
            "prompt as a user turn and each response as the assistant's")
    if cfg.kind == "pair":
        report["pairs"] = {"near_identical_share": _near_identical_share([items[i].row for i in good]),
                           "threshold": NEAR_IDENTICAL}
    return report


def _token_report(encoded: dict, encoder: Encoder) -> dict[str, Any]:
    encs = list(encoded.values())
    lengths = [n for e in encs for n in e.lengths]
    out: dict[str, Any] = {
        "tokenizer": getattr(encoder.tok, "name_or_path", type(encoder.tok).__name__),
        "chat_template": bool(getattr(encoder.tok, "chat_template", None)),
        "full_text": quantiles(lengths),
        "max_length": encoder.max_length,
        "rule": encoder.rule,
        "truncated_rows": sum(e.truncated for e in encs),
        "truncated_share": _share(sum(e.truncated for e in encs), len(encs)),
    }
    if any(e.trained_tokens for e in encs):
        out["trained_tokens"] = sum(e.trained_tokens for e in encs)
        out["tokens"] = sum(e.tokens for e in encs)
        out["trained_token_share"] = _share(out["trained_tokens"], out["tokens"])
    return out


def quantiles(lengths: list[int]) -> dict[str, int]:
    """p50 / p90 / p99 / max of token lengths (empty dict for no rows)."""
    if not lengths:
        return {}
    p50, p90, p99 = np.percentile(np.asarray(lengths), [50, 90, 99])
    return {"p50": int(round(p50)), "p90": int(round(p90)), "p99": int(round(p99)), "max": int(max(lengths))}


def _invalid_report(items: list[Item]) -> dict[str, Any]:
    """Invalid rows per reason (a row counts under its first problem) with a few example messages."""
    by_reason = Counter(item.problems[0].reason for item in items if item.problems)
    examples: dict[str, list[str]] = {}
    for item in items:
        if item.problems:
            found = examples.setdefault(item.problems[0].reason, [])
            if len(found) < N_EXAMPLES:
                found.append("; ".join(p.message(item.origin) for p in item.problems))
    return {"total": sum(by_reason.values()), "by_reason": dict(by_reason.most_common()), "examples": examples}


def _share(n: int, total: int) -> float:
    return round(n / total, 4) if total else 0.0


def _text(x: Any) -> str:
    return x if isinstance(x, str) else "\n".join(str(m.get("content", "")) for m in x)


def _near_identical_share(rows: list[dict[str, Any]]) -> float:
    """Share of pairs whose chosen and rejected texts have a difflib ratio >= NEAR_IDENTICAL."""
    close = 0
    for row in rows:
        a, b = _text(row["chosen"]), _text(row["rejected"])
        # difflib's own upper bounds (real_quick_ratio: lengths; quick_ratio: shared characters) rule
        # out almost every pair before a SequenceMatcher is built (building one indexes b: 1/6 of a
        # 10k-row check) and before its quadratic ratio()
        n = len(a) + len(b)
        if n and 2 * min(len(a), len(b)) < NEAR_IDENTICAL * n:
            continue
        if n and 2 * sum((Counter(a) & Counter(b)).values()) < NEAR_IDENTICAL * n:
            continue
        if difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= NEAR_IDENTICAL:
            close += 1
    return _share(close, len(rows))


def format_preflight(report: dict[str, Any]) -> str:
    """The report as a few readable lines for a terminal."""
    split, invalid = report["split"], report["invalid"]
    fmt = "conversations" if report.get("conversational") else "plain text"
    lines = [
        f"data preflight: {report['format']} -> {report['kind']} rows ({fmt}) from {report['source']}",
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
            lines.append(f"  tokens per sequence ({tokens['tokenizer']}): p50 {q['p50']}, p90 {q['p90']}, "
                         f"p99 {q['p99']}, max {q['max']}")
        lines.append(f"  rows longer than max_length {tokens['max_length']}: {tokens['truncated_rows']} "
                     f"({tokens['truncated_share']:.1%}); {tokens['rule']}")
        if "trained_token_share" in tokens:
            lines.append(f"  tokens carrying loss: {tokens['trained_tokens']} of {tokens['tokens']} "
                         f"({tokens['trained_token_share']:.1%})")
    pairs = report.get("pairs")
    if pairs:
        lines.append(
            f"  near-identical chosen/rejected (difflib ratio >= {pairs['threshold']}): {pairs['near_identical_share']:.1%}"
        )
    for w in report.get("warnings", []):
        lines.append(f"  warning: {w}")
    if invalid["total"] and report.get("on_invalid") == "error":
        lines.append(f"  -> training would stop: {invalid['total']} invalid rows under data.on_invalid=error")
    return "\n".join(lines)
