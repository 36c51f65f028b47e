"""Reward stage: pairwise Bradley-Terry (TRL RewardTrainer) or K-wise ranked lists (ours).

Rows are tokenised here with left truncation of the prompt, so TRL sees already-processed
`chosen_ids`/`rejected_ids` and neither appends a missing EOS (BERT tokenizers have none) nor
silently drops long pairs.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from omegaconf import DictConfig

from .. import distributed
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
        train, rep_train = tokenize(splits.train, tokenizer, max_length)
        evalset, rep_eval = tokenize(splits.eval, tokenizer, max_length) if splits.eval else (None, None)
        n_trunc = rep_train.n_truncated + (rep_eval.n_truncated if rep_eval else 0)
        log.info("tokenised at max_length=%d: %d/%d train and %d/%d eval rows truncated (prompt cut from the "
                 "left first), none dropped", max_length, rep_train.n_truncated, len(splits.train),
                 rep_eval.n_truncated if rep_eval else 0, len(splits.eval))

        args = ctx.trainer_config(RewardConfig, **({} if evalset is not None else {"eval_strategy": "no"}))
        model = build_reward_model(cfg.model, cfg.peft, tokenizer)
        log.info("reward model %s: %s", source, count_parameters(model))
        trainer_cls = RewardTrainer if loss == "pairwise" else KWiseRewardTrainer
        trainer = trainer_cls(model=model, args=args, processing_class=tokenizer,
                              train_dataset=train, eval_dataset=evalset)

        metrics: dict = {"loss": loss, "train_rows": len(splits.train), "eval_rows": len(splits.eval),
                         "truncated_rows": n_trunc, "dropped_rows": dict(splits.dropped),
                         **count_parameters(model)}
        def evaluate(m):
            # Before training, a ZeRO-3 model has no DeepSpeed engine to fetch its shards: gather
            # them for the pass (every rank runs it in lockstep); afterwards the engine's hooks do.
            whole = distributed.gathered(m) if trainer.deepspeed is None else contextlib.nullcontext()
            with whole:
                if loss == "pairwise":
                    return evaluate_pairs(m, tokenizer, evalset)
                return evaluate_ranked(m, evalset, pad_token_id=tokenizer.pad_token_id)

        if evalset is not None:
            metrics["eval_before"] = evaluate(trainer.model)
        out = trainer.train(resume_from_checkpoint=ctx.last_checkpoint())
        metrics["train_loss"] = out.training_loss
        metrics["train_runtime_s"] = out.metrics.get("train_runtime")
        if evalset is not None:
            ev = evaluate(trainer.model)
            metrics["eval"] = ev
            metrics["eval_accuracy"] = ev["accuracy"]
            metrics["eval_loss_before"] = metrics["eval_before"]["loss"]
            metrics["eval_loss_after"] = ev["loss"]
            log.info("reward model held-out accuracy: %.3f (before training %.3f), loss %.4f -> %.4f",
                     ev["accuracy"], metrics["eval_before"]["accuracy"], metrics["eval_loss_before"], ev["loss"])
            if ev.get("accuracy_by_k"):
                log.info("held-out accuracy by K: %s",
                         ", ".join(f"K={k}: {a:.3f}" for k, a in ev["accuracy_by_k"].items()))
            trainer.log({f"final/{k}": v for k, v in ev.items() if isinstance(v, int | float)})
        return common.finish(ctx, kind="reward", model=trainer.model, tokenizer=tokenizer, metrics=metrics,
                             engine=trainer.deepspeed)
