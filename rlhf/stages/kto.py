"""KTO stage: TRL's KTOTrainer on unpaired preference rows (a thumbs-up or thumbs-down on one
response; `rlhf.data.unpaired`), the policy initialised from an SFT artifact, the reference = that
same SFT model frozen or, under LoRA, the policy with its adapter disabled.

KTO (Ethayarajh et al. 2024, arXiv:2402.01306, eq. 7-8) weighs desirable and undesirable losses by
λ_D and λ_U; the paper advises λ_D·n_D / (λ_U·n_U) in [1, 4/3]. Unless `trainer.desirable_weight` or
`trainer.undesirable_weight` is given, the larger class keeps weight 1 and the smaller one gets
n_larger / n_smaller (ratio 1, the range's lower end, which balanced data gives with 1 and 1).

Rows arrive tokenised by `rlhf.data.UnpairedEncoder` as TRL would tokenise them, already cut at
max_length, so TRL filters nothing: the rows validation accepts are the rows trained on. TRL's KL
estimate (mismatched completions, rotated by one within each batch) is added here as TRL adds it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from .. import distributed
from ..errors import UserError
from . import StageFacts, beta_knob, common, stage_name
from .curves import Curves, attach
from .evaluator import PolicyEvaluator
from .inputs import policy_inputs, row_metrics
from .offline import train_and_finish

log = logging.getLogger(__name__)

# A frozen reference (the SFT model; under LoRA the policy with its adapter off), a causal LM, offline.
FACTS = StageFacts(reference=True, model="causal", online=False, frontier_label=stage_name, knob=beta_knob)
DATA_KINDS = ("unpaired",)
TRAINER = "trl.KTOConfig"
LOSS_TYPES = ("kto", "apo_zero_unpaired")  # TRL 1.16 KTOConfig.loss_type


@dataclass
class Options:
    """`stage:` of stage=kto: nothing of its own (the KTO knobs are TRL's, under `trainer:`)."""


def encoder(cfg: DictConfig, tokenizer):
    from rlhf.data import UnpairedEncoder

    return UnpairedEncoder(tokenizer, int(cfg.model.max_length))


def problems(cfg: DictConfig) -> list[str]:
    """What TRL's KTOTrainer would only refuse after loading the models."""
    from ..errors import did_you_mean

    t, out = cfg.trainer, []
    lt = t.get("loss_type", "kto")
    if lt not in LOSS_TYPES:
        out.append(f"trainer.loss_type: {lt!r} is not a TRL KTO loss{did_you_mean(str(lt), LOSS_TYPES)} "
                   f"(one of {', '.join(LOSS_TYPES)})")
    if lt == "kto" and int(t.get("per_device_train_batch_size", 8)) < 2:
        out.append("trainer.per_device_train_batch_size: KTO estimates its KL term from the other completions of a "
                   "batch: it needs >= 2")
    beta = t.get("beta", 0.1)
    if isinstance(beta, int | float) and beta <= 0:
        out.append(f"trainer.beta: must be > 0, got {beta}")
    for k in ("desirable_weight", "undesirable_weight"):
        w = t.get(k)
        if isinstance(w, int | float) and w <= 0:
            out.append(f"trainer.{k}: must be > 0, got {w}")
    return out


def balanced_weights(n_desirable: int, n_undesirable: int) -> dict[str, float]:
    """λ_D, λ_U with λ_D·n_D / (λ_U·n_U) = 1 (the KTO paper's advised range is [1, 4/3], eq. 8):
    the larger class keeps 1.0. Raises UserError when either class is empty."""
    if n_desirable == 0 or n_undesirable == 0:
        have = "desirable (label true)" if n_desirable else "undesirable (label false)"
        raise UserError(f"data: every training row is {have}: KTO learns from the contrast between desirable and "
                        "undesirable completions and needs both labels (from pairs: data.kind=unpaired on a pair "
                        "source gives chosen -> true, rejected -> false)")
    if n_desirable >= n_undesirable:
        return {"desirable_weight": 1.0, "undesirable_weight": round(n_desirable / n_undesirable, 4)}
    return {"desirable_weight": round(n_undesirable / n_desirable, 4), "undesirable_weight": 1.0}


def _pretokenized(trainer_cls):
    """KTOTrainer taking rows already tokenised by UnpairedEncoder (prompt_ids/completion_ids/label);
    adds TRL's KL completions (the batch's completions rotated by one) exactly as TRL does."""

    class PretokenizedKTOTrainer(trainer_cls):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            missing = {"prompt_ids", "completion_ids", "label"} - set(dataset.column_names)
            if missing:
                raise ValueError(f"the {dataset_name} dataset lacks {sorted(missing)}: encode it with "
                                 "rlhf.data.UnpairedEncoder")
            if not self.calculate_KL:
                return dataset

            def add_kl_completion_ids(examples):  # TRL 1.16 KTOTrainer._prepare_dataset, verbatim
                examples["KL_completion_ids"] = [examples["completion_ids"][-1]] + examples["completion_ids"][:-1]
                return examples

            return dataset.map(add_kl_completion_ids, batched=True, batch_size=args.per_device_train_batch_size)

    return PretokenizedKTOTrainer


def run(cfg: DictConfig, run_dir: Path):
    from trl import KTOConfig, KTOTrainer

    from rlhf.data import label_counts

    from ..models import build_policy, count_parameters, load_frozen_policy

    with common.stage_run(cfg, run_dir) as ctx:
        source, init_art, tokenizer, splits = policy_inputs(cfg, encoder)
        n_des, n_und = label_counts(splits.train)
        weights = balanced_weights(n_des, n_und)  # refuses one label only, before any model loads
        given = {k: cfg.trainer[k] for k in weights if k in cfg.trainer}
        weights = given or weights
        evaluator = PolicyEvaluator.from_config(cfg, tokenizer, splits)  # fails early on a bad judge / RM
        curves = Curves.from_config(ctx, evaluator, lambda: trainer.ref_model)
        ctx.begin()

        args = ctx.trainer_config(KTOConfig, **weights, **({} if splits.eval else {"eval_strategy": "no"}))
        model = build_policy(cfg.model, cfg.peft, tokenizer)
        ref = None if cfg.peft.method != "none" else load_frozen_policy(
            cfg.model, source, tokenizer, whole=not distributed.uses_deepspeed(cfg))
        log.info("policy %s: %s; reference: %s; %d desirable / %d undesirable rows, weights %s (%s)", source,
                 count_parameters(model), "the policy with its LoRA adapter disabled" if ref is None else source,
                 n_des, n_und, weights, "given" if given else "balanced from the label counts")
        trainer = _pretokenized(KTOTrainer)(
            model=model, ref_model=ref, args=args, processing_class=tokenizer,
            train_dataset=splits.train_features,
            eval_dataset=splits.eval_features if splits.eval else None,
        )
        attach(ctx, trainer, curves)
        metrics: dict = {**row_metrics(splits, len(trainer.train_dataset),
                                       len(trainer.eval_dataset) if splits.eval else 0),
                         "loss_type": args.loss_type, "beta": args.beta, "desirable_rows": n_des,
                         "undesirable_rows": n_und, "desirable_weight": args.desirable_weight,
                         "undesirable_weight": args.undesirable_weight, "weights": "given" if given else "balanced",
                         **count_parameters(model), "reference_in_memory": trainer.ref_model is not None}
        return train_and_finish(ctx, trainer, splits, evaluator=evaluator, curves=curves, tokenizer=tokenizer,
                                metrics=metrics, held_out=_kto_eval, name="KTO", source=source,
                                reference_dir=init_art.run_dir if init_art else source,
                                reference=trainer.ref_model if not distributed.uses_deepspeed(cfg) else None)


def _kto_eval(trainer, prefix: str) -> dict:
    """Held-out KTO loss, implicit-reward margin (desirable - undesirable) and KL estimate, read back
    from the log history (TRL adds them in `log()`)."""
    trainer.evaluate()
    logged = trainer.state.log_history[-1]
    keys = {"loss": "loss", "rewards/margins": "margin", "rewards/chosen": "reward_desirable",
            "rewards/rejected": "reward_undesirable", "kl": "kl"}
    return {f"{prefix}_{short}": logged[f"eval_{k}"] for k, short in keys.items() if f"eval_{k}" in logged}
