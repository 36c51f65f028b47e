"""PPO stage: the adapter between the config and `rlhf.ppo` (our implementation).

Policy from an SFT artifact; reference = that SFT model frozen (or, under LoRA, the policy with its
adapter disabled); reward = a reward-model artifact or a judge; value model from the reward model
(default) or the policy, with a per-token scalar head. Every model is loaded by `rlhf.models` in the
run's dtype. Ends with the policy-vs-reference evaluation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from omegaconf import DictConfig, OmegaConf

from .. import distributed
from . import StageFacts, common, stage_name
from .curves import Curves
from .evaluator import PolicyEvaluator, finish_policy, load_reference, reward_scorer
from .inputs import PROMPT_KINDS, policy_inputs, prompt_encoder, row_metrics, train_prompts

log = logging.getLogger(__name__)


def knob(trainer: dict) -> str | None:
    """The KL leash that places a PPO run on the frontier: the adaptive controller's target, or a fixed β."""
    from ..ppo.config import PPOConfig  # the defaults of a config.yaml written before a knob existed

    if trainer.get("kl_control", PPOConfig.kl_control) == "adaptive":
        return f"target={trainer.get('kl_target', PPOConfig.kl_target):g}"
    return f"β={trainer.get('kl_coef'):g}" if trainer.get("kl_coef") is not None else None


FACTS = StageFacts(reference=True, model="causal", online=True, frontier_label=stage_name, knob=knob)
DATA_KINDS = PROMPT_KINDS
encoder = prompt_encoder  # prompts to sample from
TRAINER = "rlhf.ppo.config.PPOConfig"


@dataclass
class Options:
    """`stage:` of stage=ppo (conf/stage/ppo.yaml)."""

    reward_model: str | None = None
    judge: str | None = None
    value_from: Literal["reward", "policy"] = "reward"
    reward_aggregate: Literal["member", "mean", "min", "mean_minus_std"] = "member"  # an ensemble (rlhf.monitor.ensemble)
    reward_member: int = field(default=0, metadata={"ge": 0})
    reward_lambda: float = field(default=1.0, metadata={"ge": 0})


def problems(cfg: DictConfig) -> list[str]:
    st, out = cfg.stage, []
    if not st.get("reward_model") and not st.get("judge"):
        out.append("stage=ppo: set stage.reward_model (a reward run dir) or stage.judge (a name or module.attr)")
    if st.get("value_from") == "reward" and not st.get("reward_model"):
        out.append("stage.value_from=reward needs stage.reward_model; or set stage.value_from=policy")
    if st.get("judge") and not st.get("reward_model"):
        from ..errors import UserError
        from ..judges import resolve

        try:
            resolve(str(st.judge), "stage.judge")
        except UserError as e:
            out += e.problems
    from ..monitor.ensemble import stage_options_problems

    out += stage_options_problems(cfg)
    from ..ppo.config import PPOConfig, PPOConfigError

    node = OmegaConf.to_container(cfg.trainer, resolve=True)
    try:  # PPO's rules and defaults live in PPOConfig: construct it, as the stage will
        PPOConfig(**{k: v for k, v in node.items() if k in PPOConfig.field_names()})
    except PPOConfigError as e:
        out += e.problems("trainer.")
    except (TypeError, ValueError):
        pass  # a wrong key, type or value: said by the trainer: node's own check (rlhf.config.trainer_problems)
    if st.get("value_from") == "reward" and st.get("reward_model"):
        from ..errors import UserError

        try:
            out += _value_vocabulary_problems(cfg, None)
        except UserError:
            pass  # an artifact not there yet (a later pipeline step) or damaged: said when the stage loads it
    return out


def _value_vocabulary_problems(cfg: DictConfig, tokenizer) -> list[str]:
    """A value model made from the reward model reads the policy's token ids: the reward model must
    use the same vocabulary (rlhf.run.integrity.same_vocabulary). Loads tokenizers only."""
    from ..models import artifact_tokenizer, load_tokenizer, resolve_source
    from ..run.artifacts import read_artifact
    from ..run.integrity import same_vocabulary

    art = read_artifact(cfg.stage.reward_model, expect_kinds=("reward",), what="stage.reward_model")
    rm_tok = artifact_tokenizer(art, "stage.reward_model")
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg.model, resolve_source(cfg.model, ("policy",))[0])
    if same_vocabulary(tokenizer, rm_tok):
        return []
    return [f"stage.value_from=reward: the reward model {art.run_dir} has another vocabulary than the policy "
            f"({len(rm_tok)} vs {len(tokenizer)} tokens; base {art.base_model}), so a value model made from it would "
            "read the policy's token ids as other tokens. Set stage.value_from=policy (a value head on the policy), "
            "or train the reward model from the policy's SFT model"]


def _scorer(cfg: DictConfig, conversational: bool):
    """(scorer, reward artifact dir or None): a reward model, else the judge (prompts as plain text)."""
    st = cfg.stage
    if st.reward_model:
        from ..monitor.ensemble import stage_scorer

        return stage_scorer(cfg, reward_scorer, conversational), st.reward_model  # an ensemble: its aggregate
    from rlhf.data.chat import plain_text

    from ..judges import resolve

    judge = resolve(str(st.judge), "stage.judge")
    return (lambda prompts, completions: judge([plain_text(p) for p in prompts], completions)), None


def run(cfg: DictConfig, run_dir: Path):
    import torch

    from ..engines import engine_for
    from ..errors import UserError
    from ..models import build_policy, build_value_model, count_parameters, stop_token_ids
    from ..ppo import PPOConfig, PPOTrainer, ValueModel, kl_trace_summary, last_checkpoint
    from ..run.artifacts import read_artifact, write_json_atomic
    from ..run.guards import StepGuard
    from ..run.saving import save_model

    st = cfg.stage
    ppo_cfg = PPOConfig(**{**OmegaConf.to_container(cfg.trainer, resolve=True), "seed": int(cfg.seed)})
    with common.stage_run(cfg, run_dir) as ctx:
        source, init_art, tokenizer, splits = policy_inputs(cfg, encoder)
        prompts, prompt_ids = train_prompts(splits)
        if st.value_from == "reward" and (wrong := _value_vocabulary_problems(cfg, tokenizer)):
            raise UserError(wrong)
        scorer, rm_dir = _scorer(cfg, splits.conversational)
        if st.value_from == "reward":
            rm = read_artifact(rm_dir, expect_kinds=("reward",), what="stage.reward_model")
            value_src = str(rm.path(rm.model_dir))
        else:
            value_src = source
        evaluator = PolicyEvaluator.from_config(cfg, tokenizer, splits)
        curves = Curves.from_config(ctx, evaluator, lambda: trainer.ref_model,  # None under LoRA: adapter disabled
                                    proxy=scorer, across_ranks=True)
        ctx.begin()

        torch.manual_seed(int(cfg.seed))  # the value head of a policy-initialised critic is new
        policy = build_policy(cfg.model, cfg.peft, tokenizer)
        lora = cfg.peft.method != "none"
        reference = None if lora else load_reference(cfg, source, tokenizer)
        try:
            value = ValueModel(build_value_model(cfg.model, value_src, tokenizer))
        except ValueError as e:
            raise UserError(f"stage.value_from={st.value_from}: {e}") from None
        held = {"policy": policy, "reference": reference, "value": value, "reward": getattr(scorer, "model", None)}
        dtypes = {k: str(next(m.parameters()).dtype).removeprefix("torch.") for k, m in held.items() if m is not None}
        log.info("policy %s: %s; reference: %s; value model from %s; reward: %s", source, count_parameters(policy),
                 "adapter disabled" if lora else "frozen copy of the SFT model", value_src, st.reward_model or st.judge)

        log_fn = ctx.tracker.log if distributed.is_main() else None  # history.jsonl, TensorBoard, W&B: one name
        ds = OmegaConf.to_container(cfg.deepspeed, resolve=True) if distributed.uses_deepspeed(cfg) else None
        guard = StepGuard(cfg.nonfinite.policy, cfg.nonfinite.max_consecutive, lambda: ppo_cfg.learning_rate)
        trainer = PPOTrainer(ppo_cfg, policy, value, tokenizer, scorer, prompts, prompt_ids, reference=reference,
                             output_dir=ctx.run_dir, log_fn=log_fn, deepspeed_config=ds,
                             stop_ids=stop_token_ids(tokenizer), guard=guard,
                             on_iteration=(lambda i: curves.after_step(i, trainer.policy)) if curves is not None else None,
                             engine=engine_for(OmegaConf.to_container(cfg.generation, resolve=True), policy))
        ckpt = last_checkpoint(ctx.run_dir)
        if ckpt:
            log.info("resuming from %s", ckpt)
            trainer.load_checkpoint(ckpt)
        torch.manual_seed(int(cfg.seed))
        history = trainer.train()
        first, last = history[0], history[-1]
        ctx.train_info = {"nonfinite_skipped_steps": guard.skipped} if guard.skipped else {}
        metrics: dict = {
            **row_metrics(splits, len(prompts), 0),
            "prompts": len(prompts), "iterations": len(history), **count_parameters(policy),
            "world_size": trainer.world_size, "rollouts_per_iteration": ppo_cfg.rollout_batch_size * trainer.world_size,
            "reference_in_memory": reference is not None, "model_dtypes": dtypes,
            "score_first": first["objective/scores"], "score_last": last["objective/scores"],
            "kl_last": last["objective/kl"], "kl_coef_last": last["kl_coef"],
            "rollout_tokens_per_s": sum(h["tokens_per_s/rollout"] for h in history) / len(history),
            "train_tokens_per_s": sum(h["tokens_per_s/train"] for h in history) / len(history),
            **kl_trace_summary(history, ppo_cfg.kl_target if ppo_cfg.kl_control == "adaptive" else None),
        }
        extra = {"reference_dir": init_art.run_dir if init_art else source, "value_dir": "value"}
        if curves is not None:  # the monitors' summary; under monitor.publish=best the best point's policy
            curves.conclude(trainer.iteration, trainer.policy, metrics, extra)
        if distributed.is_main():
            write_json_atomic(ctx.run_dir / "ppo_history.json", history)
        log.info("PPO: score %.3f -> %.3f, KL %.2f nats (beta %.4f)", metrics["score_first"], metrics["score_last"],
                 metrics["kl_last"], metrics["kl_coef_last"])
        save_model(value.seq, tokenizer, ctx.run_dir, trainer.engine, subdir="value")  # collective under ZeRO-3
        return finish_policy(ctx, evaluator, trainer.policy, tokenizer, metrics, source=source,
                             reference=trainer.ref_model, engine=trainer.engine, extra=extra, across_ranks=True)

