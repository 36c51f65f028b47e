"""SFT stage: TRL's SFTTrainer on rows the framework tokenised (`rlhf.data.SFTEncoder`): loss on the
assistant turns / the completion / every token (`stage.loss_on`), held-out loss and perplexity
before and after."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from omegaconf import DictConfig

from . import StageFacts, beta_knob, common, stage_name
from .inputs import policy_inputs, row_metrics

log = logging.getLogger(__name__)

FACTS = StageFacts(reference=False, model="causal", online=False, frontier_label=stage_name, knob=beta_knob)
DATA_KINDS = ("sft",)
TRAINER = "trl.SFTConfig"
# stage.batching -> SFTConfig fields; `grouped` also swaps in our sampler (rlhf/stages/batching.py).
# Measured side by side with plain TRL in bench/run.py (P2).
BATCHING = {
    "grouped": dict(packing=False),
    "padded": dict(packing=False),
    "packed": dict(packing=True, packing_strategy="bfd"),
    "wrapped": dict(packing=True, packing_strategy="wrapped"),
}


@dataclass
class Options:
    """`stage:` of stage=sft (defaults and reasons: conf/stage/sft.yaml)."""

    eval_before: bool = True
    early_stopping_patience: int | None = field(default=None, metadata={"ge": 1})
    batching: Literal["grouped", "padded", "packed", "wrapped"] = "grouped"
    loss_on: Literal["assistant", "completion", "all"] = "assistant"


def encoder(cfg: DictConfig, tokenizer):
    from rlhf.data import SFTEncoder

    return SFTEncoder(tokenizer, int(cfg.model.max_length), cfg.stage.loss_on)


def problems(cfg: DictConfig) -> list[str]:
    out = []
    for key in ("assistant_only_loss", "completion_only_loss", "packing", "dataset_text_field"):
        if key in cfg.trainer:
            out.append(f"trainer.{key}: set by the stage (rows arrive tokenised with their loss mask); use "
                       "stage.loss_on=assistant|completion|all and stage.batching instead")
    return out


def run(cfg: DictConfig, run_dir: Path):
    from transformers import EarlyStoppingCallback
    from trl import SFTConfig, SFTTrainer

    from ..models import build_policy, count_parameters
    from .batching import length_grouped

    st = cfg.stage
    with common.stage_run(cfg, run_dir) as ctx:
        source, _, tokenizer, splits = policy_inputs(cfg, encoder)
        ctx.begin()

        extra = dict(BATCHING[st.batching])
        callbacks = []
        if st.early_stopping_patience:
            extra.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
                         save_strategy=cfg.trainer.eval_strategy, save_steps=cfg.trainer.eval_steps)
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=int(st.early_stopping_patience)))
        if not splits.eval:
            extra["eval_strategy"] = "no"
        args = ctx.trainer_config(SFTConfig, **extra)
        model = build_policy(cfg.model, cfg.peft, tokenizer)
        log.info("policy %s: %s", source, count_parameters(model))

        trainer_cls = length_grouped(SFTTrainer) if st.batching == "grouped" else SFTTrainer
        trainer = trainer_cls(
            model=model, args=args, processing_class=tokenizer, callbacks=callbacks,
            train_dataset=splits.train_features,
            eval_dataset=splits.eval_features if splits.eval else None,
        )
        common.track(ctx, trainer)
        metrics: dict = {**row_metrics(splits, len(trainer.train_dataset),
                                              len(trainer.eval_dataset) if splits.eval else 0),
                         "loss_on": st.loss_on, **count_parameters(model)}
        if splits.eval and st.eval_before:
            def eval_before():
                before = trainer.evaluate(metric_key_prefix="eval_before")
                metrics["eval_loss_before"] = before["eval_before_loss"]
                metrics["eval_ppl_before"] = math.exp(before["eval_before_loss"])

            common.before_training(trainer, eval_before)
        out = ctx.train(trainer)  # resumes an interrupted run; train_loss covers the whole run
        metrics["train_loss"] = out.training_loss
        metrics["train_runtime_s"] = out.metrics.get("train_runtime")  # this session's (since a resume)
        n_tokens = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
        if n_tokens:
            metrics["train_tokens"] = n_tokens[-1]  # the whole run's: the count is carried across a resume
            if out.metrics.get("train_runtime"):
                session = n_tokens[-1] - (out.metrics.get("num_tokens_at_resume") or 0)
                metrics["train_tokens_per_s"] = session / out.metrics["train_runtime"]
        if splits.eval:
            after = trainer.evaluate()
            metrics["eval_loss"] = after["eval_loss"]
            metrics["eval_ppl"] = math.exp(after["eval_loss"])
        log.info("SFT: eval loss %s -> %s", metrics.get("eval_loss_before"), metrics.get("eval_loss"))
        return common.finish(ctx, kind="policy", model=trainer.model, tokenizer=tokenizer, metrics=metrics,
                             engine=trainer.deepspeed)
