"""The ending the offline preference stages share (DPO, KTO, SimPO/ORPO): the held-out evaluation of
the untrained model, training, the curves' summary, the held-out evaluation of the trained model,
then the policy-vs-reference evaluation and the artifact (`evaluator.finish_policy`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from . import common
from .evaluator import finish_policy

log = logging.getLogger(__name__)


def train_and_finish(ctx, trainer, splits, *, evaluator, curves, tokenizer, metrics: dict[str, Any],
                     held_out: Callable[[Any, str], dict], name: str, source: str, reference_dir: str,
                     reference=None, across_ranks: bool = False):
    """Train `trainer` and return the run's Artifact.

    `held_out(trainer, prefix) -> {prefix_<metric>: value}` is the stage's held-out evaluation, run
    before training (`eval_before`) and after (`eval`) when the data has a held-out split; `name`
    labels its log line (DPO, KTO, SIMPO, ORPO). `source` is the model the final evaluation measures
    KL against unless `evaluation.reference` names another (`finish_policy`), `reference` that model
    already in memory (None: loaded again, or under LoRA the policy with its adapter disabled);
    `reference_dir` is recorded in the artifact as `extra.reference_dir`; `across_ranks`: the stage's
    models evaluate in lock-step on every rank under DeepSpeed / several processes (`finish_policy`).
    """
    if splits.eval:
        common.before_training(trainer, lambda: metrics.update(held_out(trainer, "eval_before")))
    out = ctx.train(trainer)
    metrics["train_loss"] = out.training_loss
    metrics["train_runtime_s"] = out.metrics.get("train_runtime")
    extra = {"reference_dir": str(reference_dir)}
    if curves is not None:  # the monitors' summary; under monitor.publish=best the best point's policy
        curves.conclude(trainer.state.global_step, trainer.model, metrics, extra)
    if splits.eval:
        metrics.update(held_out(trainer, "eval"))
        shown = [f"{k} {metrics[f'eval_before_{k}']:.3f} -> {metrics[f'eval_{k}']:.3f}"
                 for k in ("margin", "accuracy", "kl") if f"eval_before_{k}" in metrics and f"eval_{k}" in metrics]
        log.info("%s held-out %s", name, ", ".join(shown) or "evaluation: no margin logged")
    return finish_policy(ctx, evaluator, trainer.model, tokenizer, metrics, source=source, reference=reference,
                         engine=trainer.deepspeed, extra=extra, across_ranks=across_ranks)
