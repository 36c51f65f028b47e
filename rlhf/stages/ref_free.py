"""SimPO and ORPO (stage=simpo, stage=orpo): preference optimisation without a reference model.

Our own small losses (`rlhf.reward.ref_free`) inside TRL's DPOTrainer, not TRL's experimental
CPOTrainer/ORPOTrainer: those tokenise and truncate rows their own way (max_prompt_length, their own
collators and filters), so the rows validated here would no longer be the rows trained on; DPOTrainer
already takes our pre-tokenised pairs (`rlhf.data.PreferenceEncoder`, as stage=dpo), its batching,
logging, DeepSpeed and LoRA paths. The subclass only replaces the loss and never builds a reference:
`precompute_ref_log_probs` keeps TRL from loading one, and the precompute pass is a no-op.

`trainer.beta` is SimPO's β (reward scale) and ORPO's λ (weight of the odds-ratio term, TRL's
ORPOConfig calls it beta too); `stage.gamma_beta_ratio` is SimPO's γ/β. The policy-vs-reference
evaluation at the end still loads the starting model to measure KL: that is evaluation, after training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from . import StageFacts, common
from .curves import Curves, attach
from .evaluator import PolicyEvaluator, load_reference
from .inputs import policy_inputs, row_metrics
from .offline import train_and_finish

log = logging.getLogger(__name__)



def frontier_label(cfg: dict) -> str:
    return str((cfg.get("stage") or {}).get("name", "?"))  # simpo | orpo


def knob(trainer: dict) -> str | None:
    """No KL term leashes these objectives: `trainer.beta` (SimPO's β, ORPO's λ) with the step size."""
    beta = trainer.get("beta")
    return f"β={beta:g}, lr={trainer.get('learning_rate', 0):g}" if isinstance(beta, int | float) else None


# No reference model at all (the point of these objectives; `rlhf check` counts none), a causal LM, offline.
FACTS = StageFacts(reference=False, model="causal", online=False, frontier_label=frontier_label, knob=knob)
DATA_KINDS = ("pair",)
TRAINER = "trl.DPOConfig"
# DPOConfig options that mean nothing without a reference (refused rather than silently ignored)
REFERENCE_OPTIONS = ("loss_type", "loss_weights", "label_smoothing", "precompute_ref_log_probs", "sync_ref_model",
                     "ref_model_mixup_alpha", "ref_model_sync_steps", "f_divergence_type", "ld_alpha", "use_weighting")


@dataclass
class Options:
    """`stage:` of stage=simpo / stage=orpo (defaults and reasons: conf/stage/simpo.yaml)."""

    gamma_beta_ratio: float | None = field(default=None, metadata={"ge": 0})  # SimPO's γ/β; orpo: null


def encoder(cfg: DictConfig, tokenizer):
    from rlhf.data import PreferenceEncoder

    return PreferenceEncoder(tokenizer, int(cfg.model.max_length))


def problems(cfg: DictConfig) -> list[str]:
    out = [f"trainer.{k}: {cfg.stage.name} has no reference model; this DPO option does not apply"
           for k in REFERENCE_OPTIONS if k in cfg.trainer]
    ratio = cfg.stage.get("gamma_beta_ratio")
    if cfg.stage.name == "simpo" and ratio is None:
        out.append("stage.gamma_beta_ratio: SimPO needs its target margin γ/β (the paper: 0.5)")
    if cfg.stage.name == "orpo" and ratio is not None:
        out.append("stage.gamma_beta_ratio: a SimPO option; ORPO has none (its λ is trainer.beta)")
    beta = cfg.trainer.get("beta", 0.1)
    if isinstance(beta, int | float) and beta <= 0:
        out.append(f"trainer.beta: must be > 0, got {beta}")
    return out


def _reference_free(trainer_cls, objective: str, gamma_beta_ratio: float | None):
    """TRL's DPOTrainer on pre-tokenised pairs with the SimPO or ORPO loss and no reference model."""
    import torch

    from rlhf.reward.ref_free import orpo_loss, simpo_loss

    from .dpo import pretokenized

    class ReferenceFreeTrainer(pretokenized(trainer_cls)):  # our PreferenceEncoder's rows, as DPO takes them
        def _precompute_ref_logps(self, dataset, name, batch_size):
            return dataset  # no reference: nothing to precompute

        def _compute_loss(self, model, inputs, return_outputs):
            mode = "train" if self.model.training else "eval"
            completion_mask = inputs["completion_mask"]
            model_kwargs = {k: v for k, v in inputs.items() if k != "completion_mask"}
            labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
            outputs = model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
            mask = completion_mask[..., 1:]
            per_token = outputs.log_probs[:, -mask.size(1):] * mask
            avg = per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # mean log-prob per completion token
            chosen, rejected = avg.chunk(2, dim=0)  # the batch is [chosen, rejected]
            if objective == "simpo":
                per_pair = simpo_loss(chosen, rejected, self.beta, gamma_beta_ratio)
            else:
                per_pair, ratio = orpo_loss(chosen, rejected, self.beta)
                self._log(mode, "log_odds_ratio", ratio)
                self._log(mode, "nll_loss", -chosen)
            loss = per_pair.mean()
            r_chosen, r_rejected = self.beta * chosen.detach(), self.beta * rejected.detach()
            self._log(mode, "rewards/chosen", r_chosen)
            self._log(mode, "rewards/rejected", r_rejected)
            self._log(mode, "rewards/margins", r_chosen - r_rejected)
            self._log(mode, "rewards/accuracies", (r_chosen > r_rejected).float())
            self._log(mode, "logps/chosen", chosen)
            self._log(mode, "logps/rejected", rejected)
            return (loss, outputs) if return_outputs else loss

        def _log(self, mode: str, key: str, x: torch.Tensor) -> None:
            self._metrics[mode][key].append(self.accelerator.gather_for_metrics(x.detach()).mean().item())

    return ReferenceFreeTrainer


def run(cfg: DictConfig, run_dir: Path):
    from trl import DPOConfig, DPOTrainer

    from ..models import build_policy, count_parameters

    with common.stage_run(cfg, run_dir) as ctx:
        objective = str(cfg.stage.name)
        source, init_art, tokenizer, splits = policy_inputs(cfg, encoder)
        evaluator = PolicyEvaluator.from_config(cfg, tokenizer, splits)
        # curves (evaluation.every_steps) measure KL to the starting model: loaded at the first point, for that only
        curves = Curves.from_config(ctx, evaluator, lambda: None if cfg.peft.method != "none"
                                    else load_reference(cfg, source, tokenizer))
        ctx.begin()

        args = ctx.trainer_config(DPOConfig, truncation_mode="keep_start", precompute_ref_log_probs=True,
                                  **({} if splits.eval else {"eval_strategy": "no"}))
        model = build_policy(cfg.model, cfg.peft, tokenizer)
        ratio = cfg.stage.gamma_beta_ratio
        trainer = _reference_free(DPOTrainer, objective, None if ratio is None else float(ratio))(
            model=model, ref_model=None, args=args, processing_class=tokenizer,
            train_dataset=splits.train_features, eval_dataset=splits.eval_features if splits.eval else None)
        log.info("%s policy %s: %s; no reference model", objective, source, count_parameters(model))
        attach(ctx, trainer, curves)
        metrics: dict = {**row_metrics(splits, len(trainer.train_dataset),
                                       len(trainer.eval_dataset) if splits.eval else 0),
                         "objective": objective, "beta": args.beta, "gamma_beta_ratio": ratio,
                         **count_parameters(model), "reference_in_memory": trainer.ref_model is not None}
        return train_and_finish(ctx, trainer, splits, evaluator=evaluator, curves=curves, tokenizer=tokenizer,
                                metrics=metrics, held_out=_eval, name=objective.upper(), source=source,
                                reference_dir=init_art.run_dir if init_art else source)


def _eval(trainer, prefix: str) -> dict:
    """Held-out loss, implicit-reward margin and accuracy, read back from the log history."""
    trainer.evaluate()
    logged = trainer.state.log_history[-1]
    keys = {"loss": "loss", "rewards/margins": "margin", "rewards/accuracies": "accuracy",
            "log_odds_ratio": "log_odds_ratio"}
    return {f"{prefix}_{short}": logged[f"eval_{k}"] for k, short in keys.items() if f"eval_{k}" in logged}
