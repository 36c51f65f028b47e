"""Eval stage: a policy artifact against its reference on held-out prompts (see rlhf.evaluation).

    rlhf stage=eval model.init_from=<policy run dir> [stage.reference=<run dir or model path>]
        evaluation.judge=rlhf.judges.vader evaluation.reward_model=<reward run dir>

The reference defaults to the one the policy was trained against (its artifact's reference_dir).
Under a multi-process launch rank 0 evaluates while the other ranks wait.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .. import distributed
from . import StageFacts, beta_knob, common, stage_name
from .evaluator import PolicyEvaluator, load_reference
from .inputs import PROMPT_KINDS, prompt_encoder

log = logging.getLogger(__name__)

FACTS = StageFacts(reference=False, model="causal", online=False, frontier_label=stage_name, knob=beta_knob)
DATA_KINDS = PROMPT_KINDS
encoder = prompt_encoder  # prompts to sample from
TRAINER = None


@dataclass
class Options:
    """`stage:` of stage=eval (conf/stage/eval.yaml)."""

    reference: str | None = None  # run dir or model path; null = the reference the policy was trained against


def problems(cfg: DictConfig) -> list[str]:
    if not cfg.model.get("init_from"):
        return ["stage=eval: set model.init_from to the run dir of the policy to evaluate"]
    return []


def run(cfg: DictConfig, run_dir: Path):
    from ..errors import UserError
    from ..models import load_frozen_policy, load_tokenizer, resolve_source
    from ..run.artifacts import read_artifact

    with common.stage_run(cfg, run_dir) as ctx:
        source, art = resolve_source(cfg.model, ("policy",))
        ref = cfg.stage.reference or art.extra.get("reference_dir")
        if not ref:
            raise UserError(f"stage.reference: {art.run_dir} records no reference; name one (a run dir or model path)")
        if Path(ref).is_dir() and (Path(ref) / "artifact.json").is_file():
            ref_art = read_artifact(ref, expect_kinds=("policy",), what="stage.reference")
            ref_source = str(ref_art.path(ref_art.model_dir))
        else:
            ref_source = str(ref)
        tokenizer = load_tokenizer(cfg.model, source)
        cfg_eval = cfg.copy()
        OmegaConf.update(cfg_eval, "evaluation.enabled", True)
        evaluator = PolicyEvaluator.from_config(cfg_eval, tokenizer)
        ctx.begin()

        def evaluate():  # rank 0 only under a launcher (the others wait): whole models, no ZeRO
            policy = load_frozen_policy(cfg.model, source, tokenizer)
            reference = load_reference(cfg, ref_source, tokenizer)
            log.info("policy %s vs reference %s on %d prompts", source, ref_source, len(evaluator.prompts))
            return evaluator.run(ctx, policy, reference)

        metrics = distributed.on_main(evaluate)
        return common.finish(ctx, kind="eval", model=None, tokenizer=None, metrics=metrics,
                             extra={"policy_dir": art.run_dir, "reference_dir": str(ref)})
