"""Reward stage: pairwise Bradley-Terry (TRL RewardTrainer) or K-wise ranked lists (ours).

Rows are tokenised here with left truncation of the prompt, so TRL sees already-processed
`chosen_ids`/`rejected_ids` and neither appends a missing EOS (BERT tokenizers have none) nor
silently drops long pairs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from . import common

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path):
    from trl import RewardConfig, RewardTrainer

    from rlhf.reward import (
        KWiseRewardTrainer,
        evaluate_pairs,
        evaluate_ranked,
        tokenize_pairs,
        tokenize_ranked,
    )

    from ..errors import UserError
    from ..models import build_reward_model, count_parameters, load_tokenizer, resolve_source

    st = cfg.stage
    rd, ctx = common.start(cfg, run_dir)
    with rd:
        source, _ = resolve_source(cfg.model, ("policy", "reward"))
        tokenizer = load_tokenizer(cfg.model, source)
        splits = common.load_data(cfg, tokenizer, truncation_side=st.truncation_side)
        loss = {"pair": "pairwise", "ranked": "kwise"}[splits.kind] if st.loss == "auto" else st.loss
        if (loss, splits.kind) not in (("pairwise", "pair"), ("kwise", "ranked")):
            raise UserError(f"stage.loss: {loss!r} does not fit {splits.kind} rows (pairwise: pair, kwise: ranked)")
        common.begin(ctx)

        max_length = int(cfg.model.max_length)
        tokenize = tokenize_pairs if loss == "pairwise" else tokenize_ranked
        train, n_trunc_train = tokenize(splits.train, tokenizer, max_length)
        evalset, n_trunc_eval = tokenize(splits.eval, tokenizer, max_length) if splits.eval else (None, 0)
        log.info("tokenised: %d/%d train and %d/%d eval rows truncated from the left, none dropped",
                 n_trunc_train, len(splits.train), n_trunc_eval, len(splits.eval))

        args = ctx.trainer_config(RewardConfig, **({} if evalset is not None else {"eval_strategy": "no"}))
        model = build_reward_model(cfg.model, cfg.peft, tokenizer)
        log.info("reward model %s: %s", source, count_parameters(model))
        trainer_cls = RewardTrainer if loss == "pairwise" else KWiseRewardTrainer
        trainer = trainer_cls(model=model, args=args, processing_class=tokenizer,
                              train_dataset=train, eval_dataset=evalset)

        metrics: dict = {"loss": loss, "train_rows": len(splits.train), "eval_rows": len(splits.eval),
                         "truncated_rows": n_trunc_train + n_trunc_eval, "dropped_rows": dict(splits.dropped),
                         **count_parameters(model)}
        evaluate = evaluate_pairs if loss == "pairwise" else evaluate_ranked
        if evalset is not None:
            metrics["eval_before"] = evaluate(trainer.model, tokenizer, evalset)
        out = trainer.train(resume_from_checkpoint=ctx.last_checkpoint())
        metrics["train_loss"] = out.training_loss
        metrics["train_runtime_s"] = out.metrics.get("train_runtime")
        if evalset is not None:
            ev = evaluate(trainer.model, tokenizer, evalset)
            metrics["eval"] = ev
            metrics["eval_accuracy"] = ev["accuracy"]
            log.info("reward model held-out accuracy: %.3f (before training %.3f)",
                     ev["accuracy"], metrics["eval_before"]["accuracy"])
            trainer.log({f"final/{k}": v for k, v in ev.items() if isinstance(v, int | float)})
        return common.finish(ctx, kind="reward", model=trainer.model, tokenizer=tokenizer, metrics=metrics)
