"""Validation of the composed config, before anything heavy is built; every problem found is
collected and raised at once as one UserError.

What is checked, for one stage or for every step of a pipeline before the first one trains:
the `stage:` node against its stage's `Options` schema (unknown keys with a did-you-mean, types,
ranges), the `model:`, `evaluation:`, `launch:` and `data:` nodes against theirs, the `trainer:` node
against the stage's trainer config class (TRL's, or our PPOConfig): unknown keys, types and ranges
of the numeric options, the DeepSpeed node's values, each stage's own cross-field rules, and that
each reward model the run uses can score the policy's text (rlhf.run.scorable).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

from . import schema
from .engines.checks import generation_problems
from .errors import UserError, did_you_mean
from .monitor import MonitorOptions
from .monitor import problems as monitor_problems
from .resources import assets_problems
from .trust import ALLOWED_TARGETS, peft_problems  # noqa: F401 (ALLOWED_TARGETS: README "Trust")

PEFT_METHODS = ("none", "lora", "qlora")
REPORTERS = ("none", "wandb", "tensorboard")
ZERO_STAGES = (0, 1, 2, 3)
# Ranges of the TRL/transformers numeric options a typo most often breaks (checked when given).
TRAINER_BOUNDS = {
    "learning_rate": ("gt", 0), "per_device_train_batch_size": ("ge", 1), "per_device_eval_batch_size": ("ge", 1),
    "gradient_accumulation_steps": ("ge", 1), "num_train_epochs": ("gt", 0), "weight_decay": ("ge", 0),
    "max_grad_norm": ("ge", 0), "warmup_steps": ("ge", 0), "warmup_ratio": ("ge", 0), "logging_steps": ("gt", 0),
    "eval_steps": ("gt", 0), "save_steps": ("gt", 0), "num_generations": ("ge", 2), "max_completion_length": ("ge", 1),
    "temperature": ("gt", 0), "label_smoothing": ("ge", 0), "save_total_limit": ("ge", 1), "beta": ("ge", 0),
}


def validate(cfg: DictConfig, stage) -> None:
    """Check `cfg` for the stage module `stage` (`rlhf.stages.lookup(cfg.stage)`; `rlhf.runner.validate`
    looks it up): raises one UserError listing every problem."""
    problems: list[str] = []
    if cfg.mode not in ("train", "check"):
        problems.append(f"mode: {cfg.mode!r} is not one of train, check")
    missing = sorted(OmegaConf.missing_keys(cfg))
    problems += [f"{k}: a value is required (set it on the command line: {k}=...)" for k in missing]
    node = _container(cfg)
    # `name` picks the stage, `module` names a stage module outside rlhf.stages (rlhf/stages/__init__.py)
    problems += schema.check({k: v for k, v in node["stage"].items() if k not in ("name", "module")}, stage.Options,
                             "stage")
    problems += schema.check(node["model"], schema.Model, "model")
    problems += schema.check(node["evaluation"], schema.Evaluation, "evaluation")
    problems += schema.check(node["launch"], schema.Launch, "launch")
    problems += schema.check(node.get("monitor") or {}, MonitorOptions, "monitor") + monitor_problems(cfg)
    problems += _data_problems(node["data"], "data", stage.DATA_KINDS, cfg.stage.name)
    if node["evaluation"].get("data") is not None:
        problems += _data_problems(node["evaluation"]["data"], "evaluation.data", None, cfg.stage.name)
    if cfg.peft.method not in PEFT_METHODS:
        problems.append(f"peft.method: {cfg.peft.method!r} is not one of {', '.join(PEFT_METHODS)}")
    else:
        problems += _peft_problems(node["peft"], cfg.mode, node.get("deepspeed"), node["model"].get("dtype"))
    if cfg.logger.report_to not in REPORTERS:
        problems.append(f"logger.report_to: {cfg.logger.report_to!r} is not one of {', '.join(REPORTERS)}")
    if cfg.sweep_objective is not None and not isinstance(cfg.sweep_objective, str):
        problems.append(f"sweep_objective: must be a dotted metric path like policy_eval.gold_policy, "
                        f"got {cfg.sweep_objective!r}")
    problems += _deepspeed_problems(node.get("deepspeed"))
    problems += generation_problems(cfg)  # generation: (rlhf.engines)
    problems += _fault_problems(cfg)
    problems += run_problems(cfg)
    problems += assets_problems(cfg)
    if stage.TRAINER and cfg.mode == "train":
        problems += trainer_problems(stage.TRAINER, node["trainer"], node["model"])
    if hasattr(stage, "problems") and not missing:
        problems += stage.problems(cfg)
    if not missing:  # each reward model can score the policy's text (tokenizer files only: rlhf.run.scorable)
        from .run.scorable import problems as scoring_problems

        problems += scoring_problems(cfg, policy_text=getattr(getattr(stage, "FACTS", None), "model", "") == "causal")
    # a missing value is said once, not again by the node's own check
    problems = [p for p in problems if p.split(":")[0] not in missing or "a value is required" in p]
    if problems:
        raise UserError(problems, title="invalid config")


def _container(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception as e:  # a broken interpolation: name it instead of a traceback
        raise UserError(f"config: cannot be resolved: {e}") from None


def _data_problems(node: Any, where: str, kinds, stage: str) -> list[str]:
    from rlhf.data import DataConfig

    try:
        data = DataConfig.from_mapping(node)
    except UserError as e:
        return [p.replace("data.", f"{where}.", 1) for p in e.problems]
    if kinds and data.kind not in kinds:
        return [f"{where}.kind: stage {stage} trains on {' or '.join(kinds)} rows, not {data.kind!r}"]
    return []


def _peft_problems(node: dict, mode: str, ds: Any = None, model_dtype: str | None = None) -> list[str]:
    out = []
    if node["method"] != "none":
        out += peft_problems(node.get("lora"))  # the config-as-code boundary (rlhf.trust)
    if mode == "train" and node["method"] == "qlora":
        from .quantization import qlora_problem, zero3_problem

        problem = qlora_problem()  # decided by trying a 4-bit layer on this device (cached)
        if problem:
            out.append(f"peft=qlora: 4-bit QLoRA cannot run here: {problem}; or use peft=lora")
        stage = ((ds or {}).get("zero_optimization") or {}).get("stage") if isinstance(ds, dict) else None
        if not problem and (problem := zero3_problem(node.get("quantization") or {}, stage, model_dtype)):
            out.append(problem)
    return out


def _fault_problems(cfg: DictConfig) -> list[str]:
    """The `nonfinite:` and `resume:` nodes (rlhf.run.guards, rlhf.run.resume)."""
    from .run.guards import config_problems

    out = config_problems(cfg)
    resume = cfg.get("resume")
    if resume is not None and not isinstance(resume.get("allow_config_change"), bool):
        out.append(f"resume.allow_config_change: must be true or false, got {resume.get('allow_config_change')!r}")
    return out


def run_problems(cfg: DictConfig) -> list[str]:
    """The root values of a run: `seed` within what every generator takes, `experiment_name` a folder
    inside the runs dir (rlhf.cmdline), the W&B mode usable before anything starts (rlhf.tracking)."""
    from .cmdline import experiment_name_problem
    from .tracking import wandb_problems

    out = []
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        out.append(f"seed: expected a whole number, got {seed!r}")
    elif not 0 <= seed <= schema.SEED_MAX:
        out.append(f"seed: {seed} is out of range: 0 to 2**32-1 = {schema.SEED_MAX} (numpy's seeds are 32-bit)")
    if (why := experiment_name_problem(str(cfg.get("experiment_name")))) is not None:
        out.append(why)
    if cfg.mode == "train":
        out += wandb_problems(cfg.logger)
    return out


def _deepspeed_problems(ds: Any) -> list[str]:
    """What a DeepSpeed config cannot do, said before a process group starts."""
    if ds is None:
        return []
    if not isinstance(ds, dict):
        return [f"deepspeed: expected a DeepSpeed config mapping, got {type(ds).__name__}"]
    out = []
    zero = ds.get("zero_optimization") or {}
    if zero.get("stage") not in ZERO_STAGES:
        out.append(f"deepspeed.zero_optimization.stage: {zero.get('stage')!r} is not one of "
                   f"{', '.join(map(str, ZERO_STAGES))}")
    for key, v in zero.items():
        if key.endswith(("_size", "_threshold", "_live_parameters", "_reuse_distance")):
            if v != "auto" and (isinstance(v, bool) or not isinstance(v, int | float) or v < 0):
                out.append(f"deepspeed.zero_optimization.{key}: expected a number >= 0 or auto, got {v!r}")
        if key.startswith("offload_") and isinstance(v, dict) and v.get("device", "none") not in ("cpu", "nvme", "none"):
            out.append(f"deepspeed.zero_optimization.{key}.device: expected cpu, nvme or none, got {v.get('device')!r}")
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        v = ds.get(key, "auto")
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            out.append(f"deepspeed.{key}: expected a whole number >= 1 or auto, got {v!r}")
    return out


def trainer_class(path: str) -> type:
    mod, _, name = path.rpartition(".")
    return getattr(importlib.import_module(mod), name)


def trainer_problems(path: str, node: dict, model: dict) -> list[str]:
    """The `trainer:` node against its config class: unknown keys (did-you-mean), types, ranges,
    and a `max_length` that would disagree with `model.max_length` (one length decides)."""
    cls = trainer_class(path)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    out = []
    for k, v in node.items():
        if k not in fields:
            out.append(f"trainer.{k}: not an option of {cls.__name__}{did_you_mean(k, fields)}")
            continue
        out += schema.check_field(v, hints.get(k, Any), fields[k].metadata, f"trainer.{k}")
        bound = TRAINER_BOUNDS.get(k)
        if bound and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out += schema.check_field(v, Any, {bound[0]: bound[1]}, f"trainer.{k}")
    if "max_steps" in node and isinstance(node["max_steps"], int) and node["max_steps"] not in (-1,) and node["max_steps"] < 1:
        out.append(f"trainer.max_steps: must be -1 (use num_train_epochs) or >= 1, got {node['max_steps']}")
    if "max_length" in fields and node.get("max_length") is not None and node["max_length"] != model.get("max_length"):
        out.append(f"trainer.max_length: {node['max_length']} disagrees with model.max_length={model.get('max_length')}: "
                   f"one length decides what is validated and trained; set model.max_length={node['max_length']} "
                   "instead")
    return out
