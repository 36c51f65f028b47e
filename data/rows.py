"""The vocabulary shared by sources, presets and validation: where a row came from, what is wrong with it.

Rows themselves stay plain dicts with only canonical keys (what TRL's dataset formats expect);
provenance travels beside them in an `Item` so that no `_src` key can leak into training data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("sft", "pair", "ranked", "prompt", "unpaired")  # prompt: TRL's prompt-only format (online stages);
# unpaired: TRL's unpaired-preference format (KTO: one completion, a thumbs-up/down label)

# Canonical keys per kind; anything else in a row is stripped (extra columns are common in user files).
SFT_SHAPES = (("messages",), ("prompt", "completion"), ("text",))  # checked in this order
PAIR_KEYS = ("prompt", "chosen", "rejected", "margin")
RANKED_KEYS = ("prompt", "responses", "ranks")
PROMPT_KEYS = ("prompt",)
UNPAIRED_KEYS = ("prompt", "completion", "label")

# Every reason code a problem can carry (the counts in reports and in `Splits.dropped` use these).
REASONS = (
    "unparsable",  # a line that is not a JSON object
    "missing_field",
    "wrong_type",
    "bad_value",  # right type, unusable value (unknown role, negative rank, no shared HH prompt)
    "empty_text",
    "chosen_equals_rejected",
    "too_few_ranks",
    "ranks_mismatch",
    "duplicate",
    "truncated_empty",
    "duplicate_key",  # a JSON object that gives one key twice (json keeps the last silently)
    "unencodable_text",  # a lone surrogate (e.g. "\ud800"): not text any tokenizer or file can hold
    "response_repeats_prompt",  # a response that starts with the whole prompt: trained as prompt + prompt + response
)


@dataclass(frozen=True, slots=True)  # one per row read: slots keep it small and quick
class Origin:
    """Where a row came from: a file name and a 1-based line (JSONL) or record number (other sources)."""

    file: str
    line: int
    unit: str = "line"  # "line" for JSONL, "row" for .json / .parquet / hf: records

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.unit == "line" else f"{self.file}:row {self.line}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one row; `field` names the offending field, or "row" for the whole row."""

    reason: str
    field: str
    detail: str

    def message(self, origin: Origin) -> str:
        if not self.field:  # about the line itself, before it has fields (e.g. its encoding)
            return f"{origin}: {self.detail}"
        return f"{origin}: {self.field}: {self.detail}"


class RowError(Exception):
    """Raised by a source or preset for a raw row it cannot turn into canonical rows."""

    def __init__(self, reason: str, field: str, detail: str):
        self.problem = Problem(reason, field, detail)
        super().__init__(f"{field}: {detail}")


@dataclass(slots=True)
class Item:
    """A canonical row (None when conversion failed) with its origin and every problem found so far."""

    origin: Origin
    row: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.row is not None and not self.problems


def valid_rows(items: list[Item]) -> list[dict[str, Any]]:
    """The rows of the items that have no problem, in order."""
    return [item.row for item in items if item.row is not None and not item.problems]
