"""Reward stage: pairwise Bradley-Terry (TRL RewardTrainer) or K-wise ranked lists (ours).

Rows are tokenised by `rlhf.data.RewardEncoder`, the prompt cut from the left, and handed to TRL as
already-processed `chosen_ids`/`rejected_ids` at the same max_length, so TRL neither appends a
missing EOS (BERT tokenizers have none) nor drops long pairs: what validation accepts is trained.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from omegaconf import DictConfig

from .. import distributed
from . import StageFacts, beta_knob, common, stage_name
from .inputs import policy_inputs, row_metrics

log = logging.getLogger(__name__)

FACTS = StageFacts(reference=False, model="score", online=False, frontier_label=stage_name, knob=beta_knob)
DATA_KINDS = ("pair", "ranked")
TRAINER = "trl.RewardConfig"


@dataclass
class Options:
    """`stage:` of stage=reward (conf/stage/reward.yaml)."""

    loss: Literal["auto", "pairwise", "kwise"] = "auto"
    ensemble: int = field(default=1, metadata={"ge": 1})  # k reward models (rlhf.monitor.ensemble)
    bootstrap: bool = True  # ensemble members on bootstrap resamples of the training rows


def encoder(cfg: DictConfig, tokenizer):
    from rlhf.data import RewardEncoder

    return RewardEncoder(tokenizer, int(cfg.model.max_length))


def problems(cfg: DictConfig) -> list[str]:
    kind, loss = cfg.data.get("kind"), cfg.stage.get("loss", "auto")
    fits = {"pairwise": "pair", "kwise": "ranked"}
    if loss in fits and kind in DATA_KINDS and fits[loss] != kind:
        return [f"stage.loss: {loss} does not fit {kind} rows (pairwise: pair rows, kwise: ranked rows)"]
    return []


def run(cfg: DictConfig, run_dir: Path):
    if int(cfg.stage.ensemble) > 1:
        return _ensemble(cfg, Path(run_dir))
    return _train(cfg, run_dir)


def _ensemble(cfg: DictConfig, run_dir: Path):
    """`stage.ensemble=k`: k complete reward artifacts in members/<i> (seed + i, bootstrap resample i;
    a finished member is kept when an interrupted ensemble is run again), then the ensemble's manifest:
    kind reward, its model member 0's, `extra.ensemble` the members (rlhf.monitor.ensemble)."""
    from omegaconf import OmegaConf

    from ..models import load_tokenizer, resolve_source
    from ..run.artifacts import read_artifact

    k = int(cfg.stage.ensemble)
    with common.stage_run(cfg, run_dir) as ctx:
        arts = []
        for i in range(k):
            member_dir = run_dir / "members" / str(i)
            if (member_dir / "artifact.json").is_file():
                arts.append(read_artifact(member_dir, expect_kinds=("reward",), what=f"ensemble member {i}"))
                continue
            member_cfg = OmegaConf.merge(cfg, {"seed": int(cfg.seed) + i, "stage": {"ensemble": 1}})
            log.info("ensemble member %d of %d: seed %d%s", i + 1, k, member_cfg.seed,
                     f", bootstrap resample {i}" if cfg.stage.bootstrap else "")
            arts.append(_train(member_cfg, member_dir, resample=int(cfg.seed) + i if cfg.stage.bootstrap else None))
        ctx.begin()
        tokenizer = load_tokenizer(cfg.model, resolve_source(cfg.model, ("policy", "reward"))[0])
        accs = [a.metrics.get("eval_accuracy") for a in arts]
        metrics = {"ensemble": k, "bootstrap": bool(cfg.stage.bootstrap), "members_eval_accuracy": accs}
        if all(a is not None for a in accs):
            metrics["eval_accuracy"] = sum(accs) / k
        members = [f"members/{i}" for i in range(k)]
        card = run_dir / "members" / "0" / arts[0].model_dir / "README.md"
        own = card.read_text() if card.is_file() else None  # member 0's card, which finish() would replace
        art = common.finish(ctx, kind="reward", model=None, tokenizer=tokenizer, metrics=metrics,
                            saved=(f"members/0/{arts[0].model_dir}", None),
                            extra={"max_length": int(cfg.model.max_length), "ensemble": members})
        if own is not None and distributed.is_main():
            card.write_text(own)
        return art


def _train(cfg: DictConfig, run_dir: Path, resample: int | None = None):
    from trl import RewardConfig, RewardTrainer

    from rlhf.reward import KWiseRewardTrainer, evaluate_pairs, evaluate_ranked

    from ..models import build_reward_model, count_parameters

    with common.stage_run(cfg, run_dir) as ctx:
        source, _, tokenizer, splits = policy_inputs(cfg, encoder, kinds=("policy", "reward"))
        max_length = int(cfg.model.max_length)
        loss = {"pair": "pairwise", "ranked": "kwise"}[splits.kind] if cfg.stage.loss == "auto" else cfg.stage.loss
        ctx.begin()

        train = splits.train_features
        if resample is not None:  # an ensemble member (rlhf.monitor.ensemble): n rows drawn with replacement
            from ..monitor.ensemble import bootstrap

            train = bootstrap(train, resample)
        evalset = splits.eval_features if splits.eval else None
        args = ctx.trainer_config(RewardConfig, **({} if evalset is not None else {"eval_strategy": "no"}))
        model = build_reward_model(cfg.model, cfg.peft, tokenizer)
        log.info("reward model %s: %s", source, count_parameters(model))
        trainer_cls = RewardTrainer if loss == "pairwise" else KWiseRewardTrainer
        trainer = trainer_cls(model=model, args=args, processing_class=tokenizer,
                              train_dataset=train, eval_dataset=evalset)
        common.track(ctx, trainer)

        metrics: dict = {"loss": loss, **row_metrics(splits, len(trainer.train_dataset),
                                                            len(trainer.eval_dataset) if evalset is not None else 0),
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
        out = ctx.train(trainer)
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
                             engine=trainer.deepspeed, extra={"max_length": max_length})
