"""DPO stage: TRL's DPOTrainer (every loss_type it offers, combined with loss_weights), the policy
initialised from an SFT artifact, the reference = that same SFT model (reloaded by TRL from the
policy's source) or, under LoRA, the policy with its adapter disabled (no second model in memory).
Rows arrive tokenised by `rlhf.data.PreferenceEncoder` exactly as TRL would tokenise them, already
cut at max_length, so TRL filters nothing: the rows validation accepts are the rows trained on.
Ends with the policy-vs-reference evaluation on held-out prompts (rlhf.evaluation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from .. import distributed
from . import StageFacts, beta_knob, common
from .curves import Curves, attach
from .evaluator import PolicyEvaluator, policy_model_dir
from .inputs import policy_inputs, row_metrics
from .offline import train_and_finish

log = logging.getLogger(__name__)


def frontier_label(cfg: dict) -> str:
    """`dpo`, or `dpo[<loss types>]` when the run combines or swaps TRL's DPO losses."""
    losses = (cfg.get("trainer") or {}).get("loss_type") or ["sigmoid"]
    return "dpo" if losses == ["sigmoid"] else "dpo[" + "+".join(losses) + "]"


FACTS = StageFacts(reference=True, model="causal", online=False, frontier_label=frontier_label, knob=beta_knob)
DATA_KINDS = ("pair",)
TRAINER = "trl.DPOConfig"
# TRL 1.16 DPOConfig.loss_type values (checked before any model loads).
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass
class Options:
    """`stage:` of stage=dpo (the DPO knobs are TRL's, under `trainer:`)."""

    reference: str | None = None  # a policy run dir as the reference; null = the policy's starting model


def encoder(cfg: DictConfig, tokenizer):
    from rlhf.data import PreferenceEncoder

    return PreferenceEncoder(tokenizer, int(cfg.model.max_length))


def problems(cfg: DictConfig) -> list[str]:
    """What TRL's DPOTrainer would only refuse after loading the models (or silently accept)."""
    from ..errors import did_you_mean

    t, out = cfg.trainer, []
    losses = t.get("loss_type", ["sigmoid"])
    losses = [losses] if isinstance(losses, str) else list(losses)
    for lt in losses:
        if lt not in LOSS_TYPES:
            out.append(f"trainer.loss_type: {lt!r} is not a TRL DPO loss{did_you_mean(str(lt), LOSS_TYPES)} "
                       f"(one of {', '.join(LOSS_TYPES)})")
    weights = t.get("loss_weights")
    if weights is not None and len(weights) != len(losses):
        out.append(f"trainer.loss_weights: {len(weights)} weights for {len(losses)} loss types {losses}")
    ls = t.get("label_smoothing", 0.0) or 0.0
    if isinstance(ls, int | float):
        if "exo_pair" in losses and ls <= 0:
            out.append("trainer.label_smoothing: loss_type exo_pair needs label_smoothing > 0 (the EXO paper uses 1e-3)")
        if not 0 <= ls < 0.5:
            out.append(f"trainer.label_smoothing: must lie in [0, 0.5) (robust / conservative DPO), got {ls}")
    beta = t.get("beta", 0.1)
    if isinstance(beta, int | float) and beta <= 0:
        out.append(f"trainer.beta: must be > 0, got {beta}")
    if cfg.stage.get("reference") and cfg.peft.method != "none":
        out.append("stage.reference: under LoRA the reference is the policy with its adapter disabled; a separate "
                   "reference model needs peft=none")
    if t.get("truncation_mode", "keep_start") != "keep_start":
        out.append("trainer.truncation_mode: only keep_start (TRL deprecates keep_end): the prompt + response is cut "
                   "at its end, and a prompt that fills model.max_length is a data problem")
    return out


def pretokenized(trainer_cls):
    """DPOTrainer taking rows already tokenised by PreferenceEncoder (prompt_ids/chosen_ids/rejected_ids)."""

    class PretokenizedDPOTrainer(trainer_cls):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(dataset.column_names)
            if missing:
                raise ValueError(f"the {dataset_name} dataset lacks {sorted(missing)}: encode it with "
                                 "rlhf.data.PreferenceEncoder")
            return dataset

    return PretokenizedDPOTrainer


def run(cfg: DictConfig, run_dir: Path):
    from trl import DPOConfig, DPOTrainer

    from ..models import build_policy, count_parameters, load_frozen_policy

    with common.stage_run(cfg, run_dir) as ctx:
        source, init_art, tokenizer, splits = policy_inputs(cfg, encoder)
        evaluator = PolicyEvaluator.from_config(cfg, tokenizer, splits)  # fails early on a bad judge / RM
        # the reference during training: TRL's (None under LoRA: the policy with its adapter disabled)
        curves = Curves.from_config(ctx, evaluator, lambda: trainer.ref_model, across_ranks=True)
        ctx.begin()

        args = ctx.trainer_config(DPOConfig, truncation_mode="keep_start",
                                  **({} if splits.eval else {"eval_strategy": "no"}))
        model = build_policy(cfg.model, cfg.peft, tokenizer)
        # The reference: the policy's starting weights, loaded by rlhf.models like every model (dtype,
        # a vocabulary grown by a chat template); under LoRA none: the policy with its adapter disabled.
        ref_source = policy_model_dir(cfg.stage.reference, "stage.reference") if cfg.stage.reference else source
        ref = None if cfg.peft.method != "none" else load_frozen_policy(
            cfg.model, ref_source, tokenizer, whole=not distributed.uses_deepspeed(cfg))
        log.info("policy %s: %s; reference: %s", source, count_parameters(model),
                 "the policy with its LoRA adapter disabled" if ref is None else ref_source)
        trainer = pretokenized(DPOTrainer)(
            model=model, ref_model=ref, args=args, processing_class=tokenizer,
            train_dataset=splits.train_features,
            eval_dataset=splits.eval_features if splits.eval else None,
        )
        attach(ctx, trainer, curves)
        metrics: dict = {**row_metrics(splits, len(trainer.train_dataset),
                                              len(trainer.eval_dataset) if splits.eval else 0),
                         "loss_type": list(args.loss_type), "beta": args.beta, **count_parameters(model),
                         "reference_in_memory": trainer.ref_model is not None}
        # The trainer's reference (None under LoRA: the adapter disabled; under ZeRO-3 TRL's partitioned
        # engine): evaluated in memory, under DeepSpeed / several processes by every rank in lock-step.
        return train_and_finish(ctx, trainer, splits, evaluator=evaluator, curves=curves, tokenizer=tokenizer,
                                metrics=metrics, held_out=_dpo_eval, name="DPO", source=ref_source,
                                reference_dir=cfg.stage.reference or (init_art.run_dir if init_art else source),
                                reference=trainer.ref_model, across_ranks=True)


def _dpo_eval(trainer, prefix: str) -> dict:
    """Held-out DPO loss, implicit-reward margin and accuracy. TRL adds its DPO metrics in `log()`,
    not to what `evaluate()` returns, so they are read back from the log history."""
    trainer.evaluate()
    logged = trainer.state.log_history[-1]
    keys = {"loss": "loss", "rewards/margins": "margin", "rewards/accuracies": "accuracy",
            "rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected"}
    return {f"{prefix}_{short}": logged[f"eval_{k}"] for k, short in keys.items() if f"eval_{k}" in logged}
