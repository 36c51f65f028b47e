"""DPO stage: TRL's DPOTrainer (every loss_type it offers, combined with loss_weights), the policy
initialised from an SFT artifact, the reference = that same SFT model (reloaded by TRL from the
policy's source) or, under LoRA, the policy with its adapter disabled (no second model in memory).
Ends with the policy-vs-reference evaluation on held-out prompts (rlhf.evaluation).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from .. import distributed
from . import common

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from ..models import build_policy, count_parameters, load_tokenizer, resolve_source

    rd, ctx = common.start(cfg, run_dir)
    with rd:
        source, init_art = resolve_source(cfg.model, ("policy",))
        tokenizer = load_tokenizer(cfg.model, source)
        splits = common.load_data(cfg, tokenizer, truncation_side="left")
        evaluator = common.PolicyEvaluator.from_config(cfg, tokenizer, splits)  # fails early on a bad judge / RM
        common.begin(ctx)

        args = ctx.trainer_config(DPOConfig, **({} if splits.eval else {"eval_strategy": "no"}))
        model = build_policy(cfg.model, cfg.peft, tokenizer)
        log.info("policy %s: %s; reference: %s", source, count_parameters(model),
                 "the policy with its LoRA adapter disabled" if cfg.peft.method != "none" else source)

        def to_ds(rows):
            return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])

        trainer = DPOTrainer(
            model=model, ref_model=None, args=args, processing_class=tokenizer,
            train_dataset=to_ds(splits.train), eval_dataset=to_ds(splits.eval) if splits.eval else None,
        )
        metrics: dict = {"train_rows": len(splits.train), "eval_rows": len(splits.eval),
                         "dropped_rows": dict(splits.dropped), "loss_type": list(args.loss_type),
                         "beta": args.beta, **count_parameters(model),
                         "reference_in_memory": trainer.ref_model is not None}
        if splits.eval:
            common.before_training(trainer, lambda: metrics.update(_dpo_eval(trainer, "eval_before")))
        out = trainer.train(resume_from_checkpoint=ctx.last_checkpoint())
        metrics["train_loss"] = out.training_loss
        metrics["train_runtime_s"] = out.metrics.get("train_runtime")
        if splits.eval:
            metrics.update(_dpo_eval(trainer, "eval"))
            log.info("DPO held-out margin %.3f -> %.3f, accuracy %.3f -> %.3f",
                     metrics.get("eval_before_margin", float("nan")), metrics.get("eval_margin", float("nan")),
                     metrics.get("eval_before_accuracy", float("nan")), metrics.get("eval_accuracy", float("nan")))

        # In one process the in-memory reference (None under LoRA: the adapter disabled); under
        # DeepSpeed / several processes rank 0 evaluates the saved policy (common.finish_policy).
        reference = trainer.ref_model if not distributed.uses_deepspeed(cfg) else None
        return common.finish_policy(ctx, evaluator, trainer.model, tokenizer, metrics, source=source,
                                    reference=reference, engine=trainer.deepspeed,
                                    extra={"reference_dir": init_art.run_dir if init_art else source})


def _dpo_eval(trainer, prefix: str) -> dict:
    """Held-out DPO loss, implicit-reward margin and accuracy. TRL adds its DPO metrics in `log()`,
    not to what `evaluate()` returns, so they are read back from the log history."""
    trainer.evaluate()
    logged = trainer.state.log_history[-1]
    keys = {"loss": "loss", "rewards/margins": "margin", "rewards/accuracies": "accuracy",
            "rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected"}
    return {f"{prefix}_{short}": logged[f"eval_{k}"] for k, short in keys.items() if f"eval_{k}" in logged}
