"""Cross-field validation of the composed config, before anything heavy is built.

Every problem found is collected and raised at once as one UserError.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import UserError, did_you_mean
from .resources import assets_problems

STAGE_DATA_KINDS = {"sft": ("sft",), "reward": ("pair", "ranked"), "dpo": ("pair",),
                    "ppo": ("sft", "pair", "ranked"), "grpo": ("sft", "pair", "ranked"), "rloo": ("sft", "pair", "ranked"),
                    "generate": ("sft", "pair", "ranked"), "eval": ("sft", "pair", "ranked")}
PEFT_METHODS = ("none", "lora", "qlora")
# TRL 1.16 DPOConfig.loss_type values (checked before any model loads).
DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
REPORTERS = ("none", "wandb", "tensorboard")


def validate(cfg: DictConfig) -> None:
    problems: list[str] = []
    if cfg.mode not in ("train", "check"):
        problems.append(f"mode: {cfg.mode!r} is not one of train, check")
    missing = sorted(OmegaConf.missing_keys(cfg))
    problems += [f"{k}: a value is required (set it on the command line: {k}=...)" for k in missing]
    stage = cfg.stage.name
    kinds = STAGE_DATA_KINDS.get(stage)
    if kinds and not OmegaConf.is_missing(cfg.data, "kind") and cfg.data.kind not in kinds:
        problems.append(f"data.kind: stage {stage} trains on {' or '.join(kinds)} rows, not {cfg.data.kind!r}")
    if cfg.peft.method not in PEFT_METHODS:
        problems.append(f"peft.method: {cfg.peft.method!r} is not one of {', '.join(PEFT_METHODS)}")
    if cfg.logger.report_to not in REPORTERS:
        problems.append(f"logger.report_to: {cfg.logger.report_to!r} is not one of {', '.join(REPORTERS)}")
    if cfg.mode == "train" and cfg.peft.method == "qlora":
        import torch

        if not torch.cuda.is_available():
            problems.append(
                "peft=qlora: 4-bit QLoRA needs a CUDA GPU (bitsandbytes kernels); none is visible. "
                "Use peft=lora on this machine."
            )
        else:
            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                problems.append("peft=qlora: bitsandbytes is not installed (pip install bitsandbytes)")
    if cfg.model.freeze_layers and int(cfg.model.freeze_layers) < 0:
        problems.append(f"model.freeze_layers: must be >= 0, got {cfg.model.freeze_layers}")
    problems += _launch_problems(cfg)
    problems += assets_problems(cfg)
    if stage == "dpo":
        problems += _dpo_problems(cfg.trainer)
    problems += _scale_out_problems(cfg)
    if cfg.mode == "train" and stage in TRAINER_CONFIG:
        problems += _unknown_trainer_keys(stage, cfg.trainer)
    if problems:
        raise UserError(problems, title="invalid config")


def _launch_problems(cfg: DictConfig) -> list[str]:
    out = []
    n = cfg.launch.world_size
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        out.append(f"launch.world_size: must be a whole number >= 1 (processes in the job), got {n!r}"
                   " (it defaults to the WORLD_SIZE environment variable)")
    mem = cfg.launch.gpu_memory_gb
    if mem is not None and (isinstance(mem, bool) or not isinstance(mem, int | float) or mem <= 0):
        out.append(f"launch.gpu_memory_gb: must be a number > 0 or null, got {mem!r}")
    if cfg.sweep_objective is not None and not isinstance(cfg.sweep_objective, str):
        out.append(f"sweep_objective: must be a dotted metric path like policy_eval.gold_policy, got {cfg.sweep_objective!r}")
    return out


ZERO_STAGES = (0, 1, 2, 3)


def _scale_out_problems(cfg) -> list[str]:
    """What a multi-process launch or a DeepSpeed config cannot do, said before a process group starts."""

    out = []
    ds = cfg.get("deepspeed")
    if ds is not None:
        zero = ds.get("zero_optimization")
        stage = zero.get("stage") if zero is not None else None
        if stage not in ZERO_STAGES:
            out.append(f"deepspeed.zero_optimization.stage: {stage!r} is not one of {', '.join(map(str, ZERO_STAGES))}")
    return out


# The TRL config class each training stage builds from its `trainer:` node.
TRAINER_CONFIG = {"sft": "trl.SFTConfig", "reward": "trl.RewardConfig", "dpo": "trl.DPOConfig",
                  "ppo": "rlhf.ppo.PPOConfig", "grpo": "trl.GRPOConfig", "rloo": "trl.RLOOConfig"}


def _unknown_trainer_keys(stage: str, trainer_cfg) -> list[str]:
    import importlib

    mod, _, name = TRAINER_CONFIG[stage].rpartition(".")
    cls = getattr(importlib.import_module(mod), name)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    return [f"trainer.{k}: not an option of {cls.__name__}{did_you_mean(k, known)}" for k in trainer_cfg
            if k not in known]


def _dpo_problems(t) -> list[str]:
    """What TRL's DPOTrainer would only refuse after loading the models (or silently accept)."""
    out = []
    losses = t.get("loss_type", ["sigmoid"])
    losses = [losses] if isinstance(losses, str) else list(losses)
    for lt in losses:
        if lt not in DPO_LOSS_TYPES:
            out.append(f"trainer.loss_type: {lt!r} is not a TRL DPO loss{did_you_mean(lt, DPO_LOSS_TYPES)} "
                       f"(one of {', '.join(DPO_LOSS_TYPES)})")
    weights = t.get("loss_weights")
    if weights is not None and len(weights) != len(losses):
        out.append(f"trainer.loss_weights: {len(weights)} weights for {len(losses)} loss types {losses}")
    ls = float(t.get("label_smoothing", 0.0) or 0.0)
    if "exo_pair" in losses and ls <= 0:
        out.append("trainer.label_smoothing: loss_type exo_pair needs label_smoothing > 0 (the EXO paper uses 1e-3)")
    if "robust" in losses and not 0 <= ls < 0.5:
        out.append(f"trainer.label_smoothing: robust DPO needs 0 <= label_smoothing < 0.5, got {ls}")
    if not 0 <= ls < 0.5:
        out.append(f"trainer.label_smoothing: must lie in [0, 0.5), got {ls}")
    if float(t.get("beta", 0.1)) <= 0:
        out.append(f"trainer.beta: must be > 0, got {t.get('beta')}")
    return out


def trainer_kwargs(config_cls: type, trainer_cfg: DictConfig | dict, **fixed: Any) -> dict[str, Any]:
    """Check `trainer:` keys against the TRL config class; unknown keys get a did-you-mean."""
    given = OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) else dict(trainer_cfg)
    known = {f.name for f in dataclasses.fields(config_cls) if f.init}
    unknown = [k for k in given if k not in known]
    if unknown:
        raise UserError(
            [f"trainer.{k}: not an option of {config_cls.__name__}{did_you_mean(k, known)}" for k in unknown],
            title=f"unknown trainer option{'s' if len(unknown) > 1 else ''}",
        )
    kwargs = {**given, **fixed}
    import torch

    if not torch.cuda.is_available():
        # TRL defaults to bf16, which raises without an accelerator: run on the CPU in fp32.
        kwargs.setdefault("use_cpu", True)
        kwargs["bf16"] = False
        kwargs["fp16"] = False
    return kwargs


def build_trainer_config(config_cls: type, trainer_cfg, **fixed: Any):
    kwargs = trainer_kwargs(config_cls, trainer_cfg, **fixed)
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise UserError(f"trainer: {config_cls.__name__} refused the options: {e}") from None
