"""Typed schemas of the config nodes we own, and one checker that lists every problem at once.

The defaults (with the reason beside each) live in the YAML group files; these dataclasses say what
each node may hold, so `rlhf.config.validate` refuses an unknown key (with a did-you-mean), a wrong
type or an out-of-range value before anything heavy is built, for every step of a pipeline. Each
stage's own `stage:` node has its schema beside the stage (`Options` in `rlhf/stages/<stage>.py`).
A field's `metadata` may bound it: ``gt`` / ``ge`` / ``le`` (numbers).

Only nodes we define get a schema: `trainer:` is a TRL config class's keyword arguments and is
checked against that class (`rlhf.config`), never mirrored here.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import did_you_mean

MISSING = "???"
INT64 = 2**63
SEED_MAX = 2**32 - 1  # numpy's seeds (set by transformers.set_seed with torch's and Python's) are 32-bit


def _positive(**bounds) -> dict:
    return {"metadata": bounds}


def check(node: Any, schema: type, prefix: str) -> list[str]:
    """Every problem of `node` (a mapping) against the dataclass `schema`, as "prefix.key: ..." lines."""
    if not isinstance(node, Mapping):
        return [f"{prefix}: expected a mapping of options, got {type(node).__name__}"]
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    out = [f"{prefix}.{k}: unknown option{did_you_mean(str(k), fields)} (options: {', '.join(fields)})"
           for k in node if k not in fields]
    for name, f in fields.items():
        where = f"{prefix}.{name}"
        if name not in node:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                out.append(f"{where}: a value is required")
            continue
        value = node[name]
        if value == MISSING:
            out.append(f"{where}: a value is required (set it on the command line: {where}=...)")
            continue  # (rlhf.config.validate lists missing values once, from OmegaConf)
        out += check_field(value, hints[name], f.metadata, where)
    return out


def check_field(value: Any, hint: Any, bounds: Mapping, where: str) -> list[str]:
    """One value against its type hint and its bounds (field metadata: `ge`, `gt`, `le`, `lt`), as
    `check` does for each field of a node; `where` names it in the problems."""
    return _check_value(value, hint, where) + _check_bounds(value, bounds, where)


def _check_value(value: Any, hint: Any, where: str) -> list[str]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return check(value, hint, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return []
        options = [a for a in args if a is not type(None)]
        for a in options:
            if not _check_value(value, a, where):
                return []
        return _check_value(value, options[0], where) if len(options) == 1 else [
            f"{where}: expected {' or '.join(_name(a) for a in args)}, got {_show(value)}"]
    if origin is Literal:
        return [] if value in args else [
            f"{where}: {_show(value)} is not one of {', '.join(map(str, args))}{did_you_mean(str(value), map(str, args))}"]
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return [f"{where}: expected a list, got {_show(value)}"]
        return [p for i, v in enumerate(value) for p in _check_value(v, args[0] if args else Any, f"{where}[{i}]")]
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return [] if isinstance(value, Mapping) else [f"{where}: expected a mapping, got {_show(value)}"]
    if hint is Any:
        return []
    if hint is bool:
        return [] if isinstance(value, bool) else [f"{where}: expected true or false, got {_show(value)}"]
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not -INT64 <= value < INT64:  # torch, numpy and Arrow hold 64-bit integers
            return [f"{where}: {value} is out of range (a whole number between -2**63 and 2**63-1)"]
        return [] if ok else [f"{where}: expected a whole number, got {_show(value)}"]
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            return [f"{where}: expected a finite number, got {value}"]
        return [] if ok else [f"{where}: expected a number, got {_show(value)}"]
    if hint is str:
        return [] if isinstance(value, str) else [f"{where}: expected a string, got {_show(value)}"]
    return []


def _check_bounds(value: Any, meta: Mapping, where: str) -> list[str]:
    if not isinstance(value, int | float) or isinstance(value, bool) or not meta:
        return []
    for key, test, words in (("gt", lambda a, b: a > b, "> "), ("ge", lambda a, b: a >= b, ">= "),
                             ("le", lambda a, b: a <= b, "<= "), ("lt", lambda a, b: a < b, "< ")):
        if key in meta and not test(value, meta[key]):
            return [f"{where}: must be {words}{meta[key]}, got {value}"]
    return []


def _name(hint: Any) -> str:
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if not isinstance(value, Mapping | list) else type(value).__name__


# ---- root-level nodes we own ------------------------------------------------------------------------
@dataclass
class Model:
    """`model:` (conf/model/*.yaml)."""

    name_or_path: str
    init_from: str | None = None
    tokenizer: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    attn_implementation: str | None = None
    add_bos: bool = True
    pad_token: str | None = None
    freeze_layers: int = field(default=0, **_positive(ge=0))
    max_length: int = field(default=512, **_positive(ge=2))
    lora_target_modules: list[str] | str | None = None
    chat_template: str | None = None


@dataclass
class Generation:
    """Sampling settings (`evaluation.generation`, `stage.generation`); also the runtime object."""

    num_samples: int = field(default=1, **_positive(ge=1))
    max_new_tokens: int = field(default=64, **_positive(ge=1))
    temperature: float = field(default=1.0, **_positive(gt=0))  # 1.0: the policy's own distribution
    top_k: int = field(default=0, **_positive(ge=0))  # 0 = off
    top_p: float = field(default=1.0, **_positive(gt=0, le=1))
    batch_size: int = field(default=64, **_positive(ge=1))  # prompts per generate call
    seed: int = field(default=0, **_positive(ge=0, le=SEED_MAX))

    @classmethod
    def from_mapping(cls, m: Mapping) -> Generation:
        return cls(**{k: m[k] for k in cls.__dataclass_fields__ if k in m and m[k] is not None})


@dataclass
class VLLMSettings:
    """`generation.vllm:` (conf/generation/*.yaml): the colocated vLLM engine's knobs, named once
    (rlhf.engines; TRL's GRPO/RLOO `use_vllm` path gets the same ones)."""

    gpu_memory_utilization: float = field(default=0.3, **_positive(gt=0, le=1))
    kv_cache_memory_bytes: int | None = field(default=None, **_positive(ge=1))
    max_model_len: int | None = field(default=None, **_positive(ge=2))
    tensor_parallel_size: int = field(default=1, **_positive(ge=1))
    enable_sleep_mode: bool = False
    enforce_eager: bool = True


@dataclass
class GenerationEngine:
    """`generation:` (conf/generation/*.yaml): which engine samples (rlhf.engines)."""

    backend: Literal["hf", "vllm"] = "hf"
    vllm: VLLMSettings = field(default_factory=VLLMSettings)


@dataclass
class Evaluation:
    """`evaluation:` (conf/config.yaml)."""

    enabled: bool = True
    data: dict | None = None
    max_prompts: int = field(default=100, **_positive(ge=1))
    judge: str | None = None
    reward_model: str | None = None
    audit_reward_models: list[str] = field(default_factory=list)
    reference: str | None = None
    n_show: int = field(default=8, **_positive(ge=0))
    every_steps: int | None = field(default=None, **_positive(ge=1))
    curve_prompts: int = field(default=16, **_positive(ge=1))
    generation: Generation = field(default_factory=Generation)


@dataclass
class Launch:
    """`launch:` (conf/config.yaml): the job's shape, for `rlhf check`'s memory estimate."""

    world_size: int = field(default=1, **_positive(ge=1))
    gpu_memory_gb: float | None = field(default=None, **_positive(gt=0))
