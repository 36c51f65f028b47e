"""One short adapter per stage, and the contract every stage module keeps.

A stage module defines, beside its `run(cfg, run_dir) -> Artifact`:

- `FACTS`: a `StageFacts` (below): what the code outside the stage needs to know about it: the
  memory estimate (`rlhf.memory`, via `rlhf check`), the pipeline's reward hand-off
  (`rlhf.pipeline`) and the frontier report (`rlhf.report.frontier`) ask it, never a list of names;
- `Options`: the dataclass schema of its `stage:` node (checked by `rlhf.runner.validate`),
- `DATA_KINDS`: the row kinds it reads, `TRAINER`: its trainer config class as a dotted path, or None,
- `encoder(cfg, tokenizer)`: the encoder of its rows (`rlhf check` preflights the data with it),
- optionally `problems(cfg) -> list[str]`: its own cross-field rules.

Stage name -> module: the plain dict `STAGES` for the stages shipped here; a stage elsewhere (a
plug-in, a test's toy stage) is found by its YAML naming its module: `stage.module: pkg.mod` in
`conf/stage/<name>.yaml` (that directory on Hydra's search path: `hydra.searchpath=[file://...]`).
`rlhf.runner.run_stage` validates and dispatches. Importing a stage module is cheap: each imports
torch, transformers and TRL inside `run`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

from ..errors import UserError, did_you_mean

STAGES = {
    "sft": "rlhf.stages.sft",
    "reward": "rlhf.stages.reward",
    "dpo": "rlhf.stages.dpo",
    "kto": "rlhf.stages.kto",
    "simpo": "rlhf.stages.ref_free",
    "orpo": "rlhf.stages.ref_free",
    "ppo": "rlhf.stages.ppo",
    "grpo": "rlhf.stages.critic_free",
    "rloo": "rlhf.stages.critic_free",
    "generate": "rlhf.stages.generate",
    "eval": "rlhf.stages.eval",
}
# What a stage module must define (beside the optional `problems`).
CONTRACT = ("FACTS", "Options", "DATA_KINDS", "TRAINER", "encoder", "run")


@dataclass(frozen=True)
class StageFacts:
    """What a stage is, for the code outside it. Every field is required: a stage says each one.

    reference: the stage holds a frozen reference model beside the policy when it trains without
        LoRA (DPO, PPO, GRPO, RLOO): `rlhf check` counts its weights (the ZeRO paper's accounting).
    model: what the stage builds from `model.name_or_path`: "causal" (a causal LM) or "score" (a
        sequence classifier with one output: a reward model); `rlhf check` counts that model.
    online: the stage samples from the policy and is trained on a reward (PPO, GRPO, RLOO): a
        pipeline step's `reward_from` then also sets `stage.reward_model`.
    frontier_label: the run's method label on the reward-KL frontier, from its resolved config (a
        dict, as config.yaml holds it), e.g. `dpo[ipo]`.
    knob: the setting that places a run on the frontier, from its `trainer:` node (a dict), e.g.
        `β=0.1`; None when the run has none.
    """

    reference: bool
    model: Literal["causal", "score"]
    online: bool
    frontier_label: Callable[[dict], str]
    knob: Callable[[dict], str | None]

    def __post_init__(self) -> None:
        if self.model not in ("causal", "score"):
            raise ValueError(f"StageFacts.model: 'causal' or 'score', got {self.model!r}")


def stage_name(cfg: dict) -> str:
    """The frontier label of most stages: the stage's name."""
    return str((cfg.get("stage") or {}).get("name", "?"))


def beta_knob(trainer: dict) -> str | None:
    """β of the trainer (DPO, GRPO, RLOO's KL coefficient), when it has one."""
    return f"β={trainer['beta']:g}" if isinstance(trainer.get("beta"), int | float) else None


def stage_module(name: str, module: str | None = None):
    """The module of stage `name`: `module` when the stage's YAML names one (`stage.module`), else
    `STAGES[name]`. Raises UserError for an unknown stage, a module that cannot be imported, or one
    that lacks part of the contract (`CONTRACT`, FACTS a StageFacts)."""
    if module is None:
        if name not in STAGES:
            raise UserError(f"stage.name: unknown stage {name!r}{did_you_mean(str(name), STAGES)}; one of "
                            f"{', '.join(STAGES)} (or name the module of a stage of your own: stage.module)")
        module = STAGES[name]
    try:
        mod = importlib.import_module(str(module))
    except ImportError as e:
        raise UserError(f"stage.module: cannot import {module!r} for stage {name!r}: {e}") from None
    missing = [k for k in CONTRACT if not hasattr(mod, k)]
    if not isinstance(getattr(mod, "FACTS", None), StageFacts) and "FACTS" not in missing:
        missing.append("FACTS (a rlhf.stages.StageFacts)")
    if missing:
        raise UserError(f"stage.module: {module} (stage {name!r}) lacks {', '.join(missing)}: "
                        "see rlhf/stages/__init__.py")
    return mod


def lookup(stage_node: Any):
    """The module of the stage a `stage:` node (DictConfig or dict) picks."""
    return stage_module(str(stage_node.get("name")), stage_node.get("module"))


def facts(stage_node: Any) -> StageFacts:
    """The FACTS of the stage a `stage:` node picks."""
    return lookup(stage_node).FACTS


FACT_NAMES = tuple(f.name for f in fields(StageFacts))
