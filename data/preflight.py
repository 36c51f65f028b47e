"""`preflight`: what a data config would give a trainer, measured before any model is built.

It runs the same reading, conversion, validation and encoding as `load_splits` (the stage's own
encoder: the same token ids, the same truncation rule) but reports bad rows instead of raising for
them, and adds what decides max_length: token-length quantiles, the share of rows max_length cuts,
and for SFT the share of tokens that carry loss. Config mistakes and missing files still raise.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .config import DataConfig
from .encode import Encoder
from .heldout import held_out
from .stream import Tally, scan

# Pairs whose responses differ by a few characters teach a reward model little and are often
# label noise; difflib's ratio = 2 * matching chars / total chars, so 0.9 is "90% the same text".
NEAR_IDENTICAL = 0.9


def preflight(cfg: DataConfig, encoder: Encoder | None = None, *, progress: bool = True) -> dict[str, Any]:
    """A JSON-serialisable report of the rows `load_splits(cfg, encoder)` would give a trainer.

    One chunked pass (`rlhf.data.stream`): memory stays bounded whatever the size of the source."""
    tally = scan(cfg, encoder, flag=near_identical if cfg.kind == "pair" else None, progress=progress,
                 split_keys=cfg.eval_split is None and cfg.split_by == "row")
    held = held_out(cfg, tally)
    n_eval = int(held.is_eval.sum())
    report: dict[str, Any] = {
        "source": cfg.source,
        "format": cfg.format,
        "kind": cfg.kind,
        "on_invalid": cfg.on_invalid,
        "conversational": tally.conversational,
        "rows_read": tally.read,
        "rows": tally.rows,
        "valid": tally.valid,
        "split": {"train": tally.valid - n_eval, "eval": n_eval, "by": cfg.split_by, **held.counts()},
        "invalid": tally.problems.report(),
        "duplicates": tally.problems.problems["duplicate"],
        "tokens": None if encoder is None else _token_report(tally, encoder),
        "warnings": [],
    }
    if tally.plain_rows_with_template:
        report["warnings"].append(
            f"{tally.plain_rows_with_template} rows are plain text although the tokenizer has a chat template: "
            "they are trained as plain text (TRL's standard format); set data.conversational=true to wrap each "
            "prompt as a user turn and each response as the assistant's")
    if tally.negative_margin[0]:
        report["warnings"].append(negative_margin_warning(tally))
    if held.eval_rows_shared:
        report["warnings"].append(_shared_warning(cfg, held))
    if cfg.kind == "pair":
        report["pairs"] = {"near_identical_share": _share(tally.flagged, tally.valid), "threshold": NEAR_IDENTICAL}
    return report


def negative_margin_warning(tally: Tally) -> str:
    n, first = tally.negative_margin
    return (f"{n} of {tally.valid} pairs have a negative margin (first {first}): TRL's reward loss "
            "-log sigmoid(r_chosen - r_rejected - margin) then lets chosen score BELOW rejected by up to that "
            "much, so the pair teaches little; a margin is how much better chosen is (>= 0): check its sign")


def _shared_warning(cfg: DataConfig, held) -> str:
    what = (f"rows of data.eval_split {cfg.eval_split!r}, e.g. {', '.join(held.examples[:3])}," if cfg.eval_split
            else "eval rows (data.split_by=row)")
    fix = ("training would stop under data.on_invalid=error; drop those eval rows with data.on_invalid=drop"
           if cfg.eval_split else "set data.split_by=prompt to keep each prompt on one side")
    return (f"{held.eval_rows_shared} {what} have a prompt that is also trained on ({held.prompts_shared} distinct "
            f"prompts): they are not held out; {fix}")


def _token_report(tally: Tally, encoder: Encoder) -> dict[str, Any]:
    truncated = sum(tally.truncated)
    out: dict[str, Any] = {
        "tokenizer": getattr(encoder.tok, "name_or_path", type(encoder.tok).__name__),
        "chat_template": bool(getattr(encoder.tok, "chat_template", None)),
        "full_text": quantiles(tally.lengths),
        "max_length": encoder.max_length,
        "rule": encoder.rule,
        "truncated_rows": truncated,
        "truncated_share": _share(truncated, tally.valid),
    }
    if tally.trained_tokens:
        out["trained_tokens"] = tally.trained_tokens
        out["tokens"] = tally.tokens
        out["trained_token_share"] = _share(out["trained_tokens"], out["tokens"])
    return out


def quantiles(lengths: Sequence[int]) -> dict[str, int]:
    """p50 / p90 / p99 / max of token lengths (empty dict for no rows)."""
    if not len(lengths):
        return {}
    x = np.asarray(lengths)
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"p50": int(round(p50)), "p90": int(round(p90)), "p99": int(round(p99)), "max": int(x.max())}


def _share(n: int, total: int) -> float | None:
    """n / total to 4 places; None (JSON null) over zero rows: a share of nothing is undefined, not 0."""
    return round(n / total, 4) if total else None


def _pct(share: float | None) -> str:
    return "n/a (no rows)" if share is None else f"{share:.1%}"


def _text(x: Any) -> str:
    return x if isinstance(x, str) else "\n".join(str(m.get("content", "")) for m in x)


def near_identical(row: dict[str, Any]) -> bool:
    """True when the pair's chosen and rejected texts have a difflib ratio >= NEAR_IDENTICAL."""
    a, b = _text(row["chosen"]), _text(row["rejected"])
    # difflib's own upper bounds (real_quick_ratio: lengths; quick_ratio: shared characters) rule out
    # almost every pair before a SequenceMatcher is built (building one indexes b) and before its
    # quadratic ratio()
    n = len(a) + len(b)
    if n and 2 * min(len(a), len(b)) < NEAR_IDENTICAL * n:
        return False
    if n and 2 * sum((Counter(a) & Counter(b)).values()) < NEAR_IDENTICAL * n:
        return False
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= NEAR_IDENTICAL


def format_preflight(report: dict[str, Any]) -> str:
    """The report as a few readable lines for a terminal."""
    split, invalid = report["split"], report["invalid"]
    fmt = "conversations" if report.get("conversational") else "plain text"
    lines = [
        f"data preflight: {report['format']} -> {report['kind']} rows ({fmt}) from {report['source']}",
        f"  read {report['rows_read']} records -> {report['rows']} rows: {report['valid']} valid "
        f"(train {split['train']}, eval {split['eval']}), {invalid['total']} invalid",
    ]
    if "prompts_train" in split:
        lines.append(f"  split by {split['by']}: distinct prompts train {split['prompts_train']}, eval "
                     f"{split['prompts_eval']}, on both sides {split['prompts_shared']}")
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
                     f"({_pct(tokens['truncated_share'])}); {tokens['rule']}")
        if "trained_token_share" in tokens:
            lines.append(f"  tokens carrying loss: {tokens['trained_tokens']} of {tokens['tokens']} "
                         f"({_pct(tokens['trained_token_share'])})")
    pairs = report.get("pairs")
    if pairs:
        lines.append(
            f"  near-identical chosen/rejected (difflib ratio >= {pairs['threshold']}): {_pct(pairs['near_identical_share'])}"
        )
    for w in report.get("warnings", []):
        lines.append(f"  warning: {w}")
    if invalid["total"] and report.get("on_invalid") == "error":
        lines.append(f"  -> training would stop: {invalid['total']} invalid rows under data.on_invalid=error")
    return "\n".join(lines)
