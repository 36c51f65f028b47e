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
from . import common
from .curves import Curves

log = logging.getLogger(__name__)

DATA_KINDS = common.PROMPT_KINDS
encoder = common.prompt_encoder  # prompts to sample from
TRAINER = "rlhf.ppo.config.PPOConfig"


@dataclass
class Options:
    """`stage:` of stage=ppo (conf/stage/ppo.yaml)."""

    reward_model: str | None = None
    judge: str | None = None
    value_from: Literal["reward", "policy"] = "reward"
    reward_aggregate: Literal["member", "mean", "min", "mean_minus_std"] = "member"  # an ensemble (rlhf.ensemble)
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
    from ..ensemble import stage_options_problems

    out += stage_options_problems(cfg)
    t = cfg.trainer
    ints = {k: t.get(k, d) for k, d in (("rollout_batch_size", 64), ("mini_batch_size", 16),
                                        ("gradient_accumulation_steps", 1))}
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in ints.values()):
        if ints["rollout_batch_size"] % ints["mini_batch_size"]:
            out.append(f"trainer.rollout_batch_size: {ints['rollout_batch_size']} must be a multiple of "
                       f"trainer.mini_batch_size ({ints['mini_batch_size']})")
        if ints["mini_batch_size"] % ints["gradient_accumulation_steps"]:
            out.append(f"trainer.mini_batch_size: {ints['mini_batch_size']} must be a multiple of "
                       f"trainer.gradient_accumulation_steps ({ints['gradient_accumulation_steps']})")
    if st.get("value_from") == "reward" and st.get("reward_model"):
        from ..errors import UserError

        try:
            out += _value_vocabulary_problems(cfg, None)
        except UserError:
            pass  # an artifact not there yet (a later pipeline step) or damaged: said when the stage loads it
    return out


def _value_vocabulary_problems(cfg: DictConfig, tokenizer) -> list[str]:
    """A value model made from the reward model reads the policy's token ids: the reward model must
    use the same vocabulary (rlhf.integrity.same_vocabulary). Loads tokenizers only."""
    from ..artifacts import read_artifact
    from ..integrity import same_vocabulary
    from ..models import artifact_tokenizer, load_tokenizer, resolve_source

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
        from ..ensemble import stage_scorer

        return stage_scorer(cfg, common.reward_scorer, conversational), st.reward_model  # an ensemble: its aggregate
    from rlhf.data.chat import plain_text

    from ..judges import resolve

    judge = resolve(str(st.judge), "stage.judge")
    return (lambda prompts, completions: judge([plain_text(p) for p in prompts], completions)), None


def run(cfg: DictConfig, run_dir: Path):
    import torch

    from ..artifacts import read_artifact, write_json_atomic
    from ..errors import UserError
    from ..guards import StepGuard
    from ..models import build_policy, build_value_model, count_parameters, save_model, stop_token_ids
    from ..ppo import PPOConfig, PPOTrainer, ValueModel, kl_trace_summary, last_checkpoint

    st = cfg.stage
    ppo_cfg = PPOConfig(**{**OmegaConf.to_container(cfg.trainer, resolve=True), "seed": int(cfg.seed)})
    rd, ctx = common.start(cfg, run_dir)
    with rd:
        source, init_art, tokenizer, splits, prompts, prompt_ids = common.online_rl_inputs(cfg)
        if st.value_from == "reward" and (wrong := _value_vocabulary_problems(cfg, tokenizer)):
            raise UserError(wrong)
        scorer, rm_dir = _scorer(cfg, splits.conversational)
        if st.value_from == "reward":
            rm = read_artifact(rm_dir, expect_kinds=("reward",), what="stage.reward_model")
            value_src = str(rm.path(rm.model_dir))
        else:
            value_src = source
        evaluator = common.PolicyEvaluator.from_config(cfg, tokenizer, splits)
        curves = Curves.from_config(ctx, evaluator, lambda: trainer.ref_model,  # None under LoRA: adapter disabled
                                    proxy=scorer)
        common.begin(ctx)

        torch.manual_seed(int(cfg.seed))  # the value head of a policy-initialised critic is new
        policy = build_policy(cfg.model, cfg.peft, tokenizer)
        lora = cfg.peft.method != "none"
        reference = None if lora else common.load_reference(cfg, source, tokenizer)
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
                             on_iteration=(lambda i: curves.after_step(i, trainer.policy)) if curves is not None else None)
        ckpt = last_checkpoint(ctx.run_dir)
        if ckpt:
            log.info("resuming from %s", ckpt)
            trainer.load_checkpoint(ckpt)
        torch.manual_seed(int(cfg.seed))
        history = trainer.train()
        first, last = history[0], history[-1]
        ctx.train_info = {"nonfinite_skipped_steps": guard.skipped} if guard.skipped else {}
        metrics: dict = {
            **common.row_metrics(splits, len(prompts), 0),
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
        return common.finish_policy(ctx, evaluator, trainer.policy, tokenizer, metrics, source=source,
                                    reference=trainer.ref_model if ds is None else None, engine=trainer.engine,
                                    extra=extra)

