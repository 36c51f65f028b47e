"""`DataConfig`: the typed mirror of a `conf/data/*.yaml` node.

The defaults (and the reason for each) live in conf/data/tinystories.yaml; the defaults here only
make the dataclass usable from Python and tests. `from_mapping` checks the node before any file is
read and reports every problem at once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlhf.errors import UserError, did_you_mean

from .rows import KINDS

FORMATS = ("canonical", "tinystories", "hh_rlhf", "oasst_trees")
# The kinds of rows each preset can produce; `canonical` rows can be any kind.
FORMAT_KIND = {"tinystories": ("sft",), "hh_rlhf": ("pair",), "oasst_trees": ("ranked", "sft")}
ON_INVALID = ("error", "drop")
MISSING = "???"  # OmegaConf's marker for a mandatory value left unset


@dataclass
class DataConfig:
    """Where the rows come from, how to read them, and what to do with bad ones."""

    kind: str  # sft | pair | ranked
    source: str  # .jsonl / .json / .parquet path, or hf:<dataset name>
    format: str  # canonical | tinystories | hh_rlhf | oasst_trees
    hf_split: str = "train"
    eval_fraction: float = 0.05
    eval_rows: int | None = None
    max_rows: int | None = None
    on_invalid: str = "error"  # error | drop
    dedupe: bool = True
    seed: int = 42
    # TRL's conversational format (message lists) for dialogue presets and, when true, plain-text rows:
    # auto = when the tokenizer has a chat template | true | false
    conversational: bool | str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.source, os.PathLike):
            self.source = os.fspath(self.source)
        problems = _value_problems(dataclasses.asdict(self))
        if problems:
            raise UserError(problems, title="invalid data config")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> DataConfig:
        """Build from a plain mapping (e.g. `dict(cfg.data)`), listing unknown keys and bad values together."""
        names = [f.name for f in dataclasses.fields(cls)]
        problems: list[str] = []
        values: dict[str, Any] = {}
        for key in m:
            if key not in names:
                problems.append(f"data.{key}: unknown key{did_you_mean(str(key), names)}")
                continue
            try:
                values[key] = m[key]
            except Exception as e:  # an OmegaConf node: a `???` left unset, or a broken interpolation
                if "Missing" in type(e).__name__:
                    values[key] = MISSING
                else:
                    problems.append(f"data.{key}: cannot be resolved: {e}")
        if isinstance(values.get("source"), os.PathLike):
            values["source"] = os.fspath(values["source"])
        for name in ("kind", "source", "format"):
            if name not in values and not any(p.startswith(f"data.{name}:") for p in problems):
                values[name] = MISSING
        problems += _value_problems(values)
        if problems:
            raise UserError(problems, title="invalid data config")
        return cls(**values)


def _value_problems(v: dict[str, Any]) -> list[str]:
    """Every bad value in `v` (only the keys present are checked)."""
    out: list[str] = []

    def choice(name: str, allowed: tuple[str, ...]) -> None:
        if name not in v:
            return
        x = v[name]
        if x == MISSING:
            out.append(f"data.{name}: missing; set it to one of {', '.join(allowed)}")
        elif x not in allowed:
            out.append(
                f"data.{name}: {x!r} is not one of {', '.join(allowed)}{did_you_mean(str(x), allowed)}"
            )

    choice("kind", KINDS)
    choice("format", FORMATS)
    choice("on_invalid", ON_INVALID)
    if "source" in v:
        s = v["source"]
        if s == MISSING:
            out.append("data.source: missing; set it to a .jsonl/.json/.parquet path or hf:<dataset name>")
        elif not isinstance(s, str) or not s.strip():
            out.append(f"data.source: expected a path or hf:<name>, got {s!r}")
    if v.get("format") in FORMAT_KIND and v.get("kind") in KINDS and v["kind"] not in FORMAT_KIND[v["format"]]:
        out.append(f"data.kind: format {v['format']} produces {' or '.join(FORMAT_KIND[v['format']])} rows, "
                   f"but kind is {v['kind']}")
    if "conversational" in v and v["conversational"] not in (True, False, "auto"):
        out.append(f"data.conversational: expected auto, true or false, got {v['conversational']!r}")
    if "hf_split" in v and (not isinstance(v["hf_split"], str) or not v["hf_split"]):
        out.append(f"data.hf_split: expected a split name such as 'train', got {v['hf_split']!r}")
    if "eval_fraction" in v:
        f = v["eval_fraction"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not (0 <= f < 1) or math.isnan(f):
            out.append(f"data.eval_fraction: expected a number in [0, 1), got {f!r}")
    for name, low in (("eval_rows", 0), ("max_rows", 1)):
        x = v.get(name)
        if x is not None and (isinstance(x, bool) or not isinstance(x, int) or x < low):
            out.append(f"data.{name}: expected null or an integer >= {low}, got {x!r}")
    if "dedupe" in v and not isinstance(v["dedupe"], bool):
        out.append(f"data.dedupe: expected true or false, got {v['dedupe']!r}")
    if "seed" in v and (isinstance(v["seed"], bool) or not isinstance(v["seed"], int)):
        out.append(f"data.seed: expected an integer, got {v['seed']!r}")
    return out
