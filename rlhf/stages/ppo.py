"""PPO stage: the adapter between the config and `rlhf.ppo` (our implementation).

Policy from an SFT artifact; reference = that SFT model frozen (or, under LoRA, the policy with its
adapter disabled); reward = a reward-model artifact or a judge; value model from the reward model
(default) or the policy, with a per-token scalar head. Ends with the policy-vs-reference evaluation.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .. import distributed
from . import common

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path):
    import torch
    from transformers import AutoModelForSequenceClassification

    from ..errors import UserError
    from ..generation import RewardScorer
    from ..models import build_policy, count_parameters, save_model
    from ..ppo import PPOConfig, PPOTrainer, ValueModel, kl_trace_summary, last_checkpoint
    from ..reward.functions import resolve

    st = cfg.stage
    try:
        ppo_cfg = PPOConfig(**OmegaConf.to_container(cfg.trainer, resolve=True), seed=int(cfg.seed))
    except (TypeError, ValueError) as e:
        raise UserError(f"trainer: {e}") from None
    rd, ctx = common.start(cfg, run_dir)
    with rd:
        source, init_art, tokenizer, splits, prompts = common.online_rl_inputs(cfg)
        if st.reward_model:
            scorer = RewardScorer.from_artifact(st.reward_model, what="stage.reward_model")
        elif st.judge:
            scorer = resolve(str(st.judge), "stage.judge")
        else:
            raise UserError("stage=ppo: set stage.reward_model (a reward run dir) or stage.judge (module.attr)")
        value_from = st.value_from
        if value_from == "reward":
            if not st.reward_model:
                raise UserError("stage.value_from=reward needs stage.reward_model; or set stage.value_from=policy")
            value_src = str(scorer.model.name_or_path)
        elif value_from == "policy":
            value_src = source
        else:
            raise UserError(f"stage.value_from: {value_from!r} is not reward or policy")
        evaluator = common.PolicyEvaluator.from_config(cfg, tokenizer, splits)
        common.begin(ctx)

        policy = build_policy(cfg.model, cfg.peft, tokenizer)
        lora = cfg.peft.method != "none"
        reference = None if lora else common.load_reference(cfg, source, tokenizer)
        seq = AutoModelForSequenceClassification.from_pretrained(value_src, num_labels=1)
        seq.config.pad_token_id = tokenizer.pad_token_id
        try:
            value = ValueModel(seq)
        except ValueError as e:
            raise UserError(f"stage.value_from={value_from}: {e}") from None
        log.info("policy %s: %s; reference: %s; value model from %s; reward: %s", source, count_parameters(policy),
                 "adapter disabled" if lora else "frozen copy of the SFT model", value_src,
                 st.reward_model or st.judge)

        log_fn = _logger(ctx) if distributed.is_main() else None
        ds = OmegaConf.to_container(cfg.deepspeed, resolve=True) if distributed.uses_deepspeed(cfg) else None
        trainer = PPOTrainer(ppo_cfg, policy, value, tokenizer, scorer, prompts, reference=reference,
                             output_dir=ctx.run_dir, log_fn=log_fn, deepspeed_config=ds)
        ckpt = last_checkpoint(ctx.run_dir)
        if ckpt:
            log.info("resuming from %s", ckpt)
            trainer.load_checkpoint(ckpt)
        torch.manual_seed(int(cfg.seed))
        history = trainer.train()
        first, last = history[0], history[-1]
        metrics: dict = {
            "prompts": len(prompts), "iterations": len(history), **count_parameters(policy),
            "world_size": trainer.world_size, "rollouts_per_iteration": ppo_cfg.rollout_batch_size * trainer.world_size,
            "reference_in_memory": reference is not None,
            "score_first": first["objective/scores"], "score_last": last["objective/scores"],
            "kl_last": last["objective/kl"], "kl_coef_last": last["kl_coef"],
            "rollout_tokens_per_s": sum(h["tokens_per_s/rollout"] for h in history) / len(history),
            "train_tokens_per_s": sum(h["tokens_per_s/train"] for h in history) / len(history),
            **kl_trace_summary(history, ppo_cfg.kl_target if ppo_cfg.kl_control == "adaptive" else None),
        }
        from ..artifacts import write_json_atomic

        if distributed.is_main():
            write_json_atomic(ctx.run_dir / "ppo_history.json", history)
        log.info("PPO: score %.3f -> %.3f, KL %.2f nats (beta %.4f)", metrics["score_first"], metrics["score_last"],
                 metrics["kl_last"], metrics["kl_coef_last"])
        save_model(value.seq, tokenizer, ctx.run_dir, trainer.engine, subdir="value")  # collective under ZeRO-3
        return common.finish_policy(ctx, evaluator, trainer.policy, tokenizer, metrics, source=source,
                                    reference=trainer.ref_model if ds is None else None, engine=trainer.engine,
                                    extra={"reference_dir": init_art.run_dir if init_art else source,
                                           "value_dir": "value"})


def _logger(ctx):
    """Per-iteration metrics to W&B (if a run is configured) under the usual names."""
    if ctx.report_to != "wandb":
        return None
    import wandb

    if wandb.run is None:
        wandb.init(name=ctx.run_name, group=ctx.cfg.logger.group, config=OmegaConf.to_container(ctx.cfg, resolve=True),
                   dir=str(ctx.run_dir))

    def log_fn(stats: dict, step: int) -> None:
        wandb.log(stats, step=step)

    return log_fn
