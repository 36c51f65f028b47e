"""`DataConfig`: the typed mirror of a `conf/data/*.yaml` node.

The defaults (and the reason for each) live in conf/data/tinystories.yaml; the defaults here only
make the dataclass usable from Python and tests. `from_mapping` checks the node before any file is
read and reports every problem at once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlhf.errors import UserError, did_you_mean

from .presets import PRESETS
from .rows import KINDS
from .split import SPLIT_BY

ON_INVALID = ("error", "drop")
MISSING = "???"  # OmegaConf's marker for a mandatory value left unset
HF_PREFIX = "hf:"
FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
LOAD_DATASET_ARG = {"hf_config": "name", "revision": "revision", "data_files": "data_files"}


@dataclass
class DataConfig:
    """Where the rows come from, how to read them, and what to do with bad ones."""

    kind: str  # sft | pair | ranked | prompt (prompt-only rows: ppo, grpo, rloo, generate, eval) | unpaired (kto)
    source: str  # .jsonl / .json / .parquet path, a `save_to_disk` folder, or hf:<dataset name or folder>
    format: str  # a key of rlhf.data.presets.PRESETS: canonical | tinystories | hh_rlhf | oasst_trees
    hf_split: str = "train"
    hf_config: str | None = None  # hf: the dataset's configuration (the hub's "subset"): load_dataset's `name`
    revision: str | None = None  # hf: a branch, tag or commit of the dataset's repository
    data_files: str | list[str] | dict[str, Any] | None = None  # hf: load_dataset's data_files (globs allowed)
    columns: dict[str, str] | None = None  # raw column -> the name the format reads, e.g. {question: prompt}
    eval_split: str | None = None  # the dataset's own split as eval (instead of eval_fraction / eval_rows)
    eval_fraction: float = 0.05
    eval_rows: int | None = None
    split_by: str = "prompt"  # prompt | row (data.split: rows sharing a prompt stay on one side)
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
        self.columns, self.data_files = _plain(self.columns), _plain(self.data_files)
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
    choice("format", tuple(PRESETS))
    choice("on_invalid", ON_INVALID)
    choice("split_by", SPLIT_BY)
    if "source" in v:
        s = v["source"]
        if s == MISSING:
            out.append("data.source: missing; set it to a .jsonl/.json/.parquet path, a save_to_disk folder or "
                       "hf:<dataset name>")
        elif not isinstance(s, str) or not s.strip():
            out.append(f"data.source: expected a path or hf:<name>, got {s!r}")
    kinds = PRESETS[v["format"]].kinds if v.get("format") in PRESETS else KINDS
    if v.get("kind") in KINDS and v["kind"] not in kinds:
        out.append(f"data.kind: format {v['format']} produces {' or '.join(kinds)} rows, "
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
    elif "seed" in v and not 0 <= v["seed"] <= 2**32 - 1:  # the split hash and numpy take 32-bit seeds
        out.append(f"data.seed: {v['seed']} is out of range: 0 to 2**32-1")
    return out + _source_option_problems(v)


def _source_option_problems(v: dict[str, Any]) -> list[str]:
    """The options that say which part of a dataset to read (`data.hf_config` ... `data.eval_split`)."""
    out: list[str] = []
    source = v.get("source") if isinstance(v.get("source"), str) else ""
    hub = source.startswith(HF_PREFIX)
    for name, what in (("hf_config", "a configuration name (the hub's subset)"),
                       ("revision", "a branch, tag or commit"), ("eval_split", "a split name such as 'test'")):
        x = v.get(name)
        if x is not None and (not isinstance(x, str) or not x):
            out.append(f"data.{name}: expected null or {what}, got {x!r}")
    for name in ("hf_config", "revision", "data_files"):
        if v.get(name) is not None and source and source != MISSING and not hub:
            out.append(f"data.{name}: only for hf:<dataset> sources (load_dataset's `{LOAD_DATASET_ARG[name]}`), "
                       f"but data.source is {source}")
    if v.get("data_files") is not None and not _files_ok(_plain(v["data_files"])):
        out.append(f"data.data_files: expected a path or glob, a list of them, or a mapping split -> paths, "
                   f"got {v['data_files']!r}")
    out += _columns_problems(_plain(v.get("columns")))
    split = v.get("eval_split")
    if isinstance(split, str) and split:
        if split == v.get("hf_split", "train"):
            out.append(f"data.eval_split: {split!r} is also data.hf_split, the training split; name another split")
        if source.lower().endswith(FILE_SUFFIXES):
            out.append(f"data.eval_split: {source} is one file without splits; use eval_fraction / eval_rows, or "
                       f"an hf:<dataset> or save_to_disk source that has a {split!r} split")
        if v.get("eval_rows") is not None:
            out.append("data.eval_rows: the eval rows are data.eval_split's; set eval_rows=null or eval_split=null")
    return out


def _plain(x: Any) -> Any:
    """An OmegaConf container (or any mapping / sequence) as plain dicts and lists."""
    if isinstance(x, Mapping):
        return {k: _plain(val) for k, val in x.items()}
    if isinstance(x, Sequence) and not isinstance(x, str):
        return [_plain(val) for val in x]
    return x


def _files_ok(files: Any) -> bool:
    def paths(x: Any) -> bool:
        return (isinstance(x, str) and bool(x)) or (isinstance(x, list) and bool(x)
                                                   and all(isinstance(p, str) and p for p in x))

    if isinstance(files, dict):
        return bool(files) and all(isinstance(k, str) and paths(p) for k, p in files.items())
    return paths(files)


def _columns_problems(columns: Any) -> list[str]:
    if columns is None:
        return []
    if not isinstance(columns, dict) or not all(isinstance(k, str) and isinstance(t, str) and k and t
                                                for k, t in columns.items()):
        return [f"data.columns: expected a mapping of raw column -> field name, e.g. "
                f"{{question: prompt, answer: completion}}, got {columns!r}"]
    targets = Counter(columns.values())
    return [f"data.columns: {' and '.join(k for k, t in columns.items() if t == name)} all map to {name!r}"
            for name, n in targets.items() if n > 1]
