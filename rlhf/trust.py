"""The config-as-code boundary: which config values may name Python code, and how far they reach.

A config (a YAML file, a command-line override, a pipeline step) is data. A few fields name code on
purpose and are listed in the README ("Trust"): judges and reward functions (`module.attr`), and
`peft.lora._target_`. Hydra's `instantiate` would build *any* `_target_`, at any depth, so an
override such as `+peft.lora.init._target_=shutil.copy` would run. Here the one `_target_` we build
must be one of ALLOWED_TARGETS, at the top of `peft.lora` only, without Hydra's other special keys;
everything below it is plain data, and it is built by calling the class, not by `instantiate`.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from .errors import UserError

# `_target_` a config may instantiate (README "Trust"): PEFT's adapter configs only.
ALLOWED_TARGETS = ("peft.LoraConfig", "peft.tuners.lora.LoraConfig", "peft.tuners.lora.config.LoraConfig")
HYDRA_KEYS = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")


def _nested(node: Any, path: str) -> list[str]:
    """Problems for every Hydra special key below `node` (a plain container), at any depth."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, dict):
            out += [f"{path}.{key}.{k}: nested instantiation is not allowed (README: Trust)" for k in value
                    if k in HYDRA_KEYS]
        out += _nested(value, f"{path}.{key}")
    return out


def peft_problems(lora: Any) -> list[str]:
    """What makes `peft.lora` (a plain container) more than a PEFT config: a `_target_` outside
    ALLOWED_TARGETS, Hydra's other special keys, a `_target_` anywhere below the top."""
    if not isinstance(lora, dict):
        return [f"peft.lora: expected the options of a PEFT config (with _target_: peft.LoraConfig), got {lora!r}"]
    out = []
    target = lora.get("_target_")
    if target not in ALLOWED_TARGETS:
        out.append(f"peft.lora._target_: {target!r} is not an allowed class (one of {', '.join(ALLOWED_TARGETS)}): "
                   "configs instantiate only documented classes (README: Trust)")
    out += [f"peft.lora.{k}: Hydra's {k} is not allowed here (README: Trust)" for k in lora
            if k in HYDRA_KEYS and k != "_target_"]
    return out + _nested(lora, "peft.lora")


def build_peft_config(peft_cfg, task_type: str):
    """The PEFT config object `peft.lora` describes (checked by `peft_problems`), e.g. a LoraConfig."""
    import importlib

    kwargs = OmegaConf.to_container(peft_cfg.lora, resolve=True)
    problems = peft_problems(kwargs)
    if problems:
        raise UserError(problems, title="invalid peft config")
    module, _, name = kwargs.pop("_target_").rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    try:
        return cls(task_type=task_type, **kwargs)
    except TypeError as e:
        raise UserError(f"peft.lora: {cls.__name__} refused the options: {e}") from None
