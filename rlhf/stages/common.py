"""What every stage does around its trainer: run dir, data, TRL config, artifact, W&B close."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .. import distributed
from ..artifacts import Artifact, RunDir, config_hash, write_artifact
from ..config import build_trainer_config
from ..errors import UserError
from ..tracking import finish_run, setup_reporting

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    cfg: DictConfig
    run_dir: Path
    run_name: str
    report_to: str

    def trainer_config(self, config_cls: type, **extra: Any):
        """The TRL config for this run: the `trainer:` node plus what the stage decides."""
        fixed = dict(
            output_dir=str(self.run_dir / "checkpoints"),
            seed=int(self.cfg.seed),
            data_seed=int(self.cfg.seed),
            report_to=self.report_to,
            run_name=self.run_name,
        )
        if distributed.uses_deepspeed(self.cfg):  # conf/deepspeed/: "auto" values are filled in by TRL/transformers
            fixed["deepspeed"] = OmegaConf.to_container(self.cfg.deepspeed, resolve=True)
        fixed.update(extra)
        return build_trainer_config(config_cls, self.cfg.trainer, **fixed)

    def last_checkpoint(self) -> str | None:
        """An interrupted run re-launched with the same run_dir resumes from its last checkpoint."""
        from transformers.trainer_utils import get_last_checkpoint

        ckpt_dir = self.run_dir / "checkpoints"
        return get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None


def before_training(trainer, evaluate) -> None:
    """Run `evaluate()` (an evaluation of the untrained model) before the first optimizer step.

    Without DeepSpeed: now. Under DeepSpeed: when `train()` begins, once its engine exists, because
    transformers refuses to evaluate a ZeRO-1/2 model before training and, under ZeRO-3, leaves an
    inference engine behind that `train()` then mistakes for its own.
    """
    if not trainer.is_deepspeed_enabled:
        evaluate()
        return
    from transformers import TrainerCallback

    class _AtTrainBegin(TrainerCallback):
        done = False

        def on_train_begin(self, args, state, control, **kwargs):
            if not self.done:
                self.done = True
                evaluate()

    trainer.add_callback(_AtTrainBegin())


def start(cfg: DictConfig, run_dir: Path) -> tuple[RunDir, StageContext]:
    rd = RunDir(run_dir)
    run_name = f"{cfg.experiment_name}/{cfg.stage.name}/{Path(run_dir).name}"
    return rd, StageContext(cfg, rd.path, run_name, "none")


def begin(ctx: StageContext) -> None:
    """Called inside the RunDir context: write the resolved config (rank 0), set up reporting."""
    if distributed.is_main():
        OmegaConf.save(ctx.cfg, ctx.run_dir / "config.yaml", resolve=True)
    ctx.report_to = setup_reporting(ctx.cfg.logger, ctx.run_dir, ctx.run_name)


def load_data(cfg: DictConfig, tokenizer, truncation_side: str):
    """Validated train/eval rows of the stage's data config (raises UserError listing bad rows)."""
    from rlhf.data import DataConfig, load_splits

    data_cfg = DataConfig.from_mapping(OmegaConf.to_container(cfg.data, resolve=True))
    splits = load_splits(data_cfg, tokenizer=tokenizer, max_length=int(cfg.model.max_length),
                         truncation_side=truncation_side)
    if splits.dropped:
        log.warning("dropped %d invalid rows (data.on_invalid=drop): %s", sum(splits.dropped.values()),
                    ", ".join(f"{k}={v}" for k, v in sorted(splits.dropped.items())))
    log.info("data %s: %d train / %d eval %s rows", splits.source, len(splits.train), len(splits.eval), splits.kind)
    if not splits.train:
        raise UserError(f"data: no training rows left in {splits.source}")
    return splits


def online_rl_inputs(cfg: DictConfig):
    """What the online RL stages (ppo, grpo, rloo) start from: the policy's source and artifact, its
    tokenizer, the data splits, and the distinct prompts of the train split (in order)."""
    from ..models import load_tokenizer, resolve_source

    source, init_art = resolve_source(cfg.model, ("policy",))
    tokenizer = load_tokenizer(cfg.model, source)
    splits = load_data(cfg, tokenizer, truncation_side="left")
    prompts = list(dict.fromkeys(r["prompt"] for r in splits.train if r.get("prompt")))
    return source, init_art, tokenizer, splits, prompts


def finish(ctx: StageContext, *, kind: str, model, tokenizer, metrics: dict[str, Any],
           extra: dict[str, Any] | None = None, saved: tuple[str | None, str | None] | None = None,
           engine=None) -> Artifact:
    """Save the model (if any, and not `saved` already), then the manifest (last, atomically), then
    close the W&B run. Every rank calls it (saving a ZeRO-3 model is collective); rank 0 writes, and
    the others wait for the manifest, so the next stage of a pipeline finds it on every rank."""
    from ..models import save_model

    if saved is not None:
        model_dir, adapter_dir = saved
    else:
        model_dir, adapter_dir = (save_model(model, tokenizer, ctx.run_dir, engine) if model is not None
                                  else (None, None))
    cfg = ctx.cfg
    base = cfg.model.name_or_path
    if cfg.model.init_from:
        from ..artifacts import read_artifact

        base = read_artifact(cfg.model.init_from).base_model
    art = Artifact(
        stage=cfg.stage.name, kind=kind, model_dir=model_dir, adapter_dir=adapter_dir,
        base_model=str(base), tokenizer_dir=model_dir,
        config_hash=config_hash(OmegaConf.to_container(cfg, resolve=True)),
        metrics={k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool | dict | list | None)},
        extra=dict(extra or {}),
    )
    if distributed.is_main():
        write_artifact(ctx.run_dir, art)
        # Checkpoints exist to resume an interrupted run; the finished model is in model/.
        shutil.rmtree(ctx.run_dir / "checkpoints", ignore_errors=True)
        finish_run(metrics)
        log.info("artifact: %s", ctx.run_dir)
    art.run_dir = str(ctx.run_dir)
    distributed.barrier()
    return art


def finish_policy(ctx: StageContext, evaluator: PolicyEvaluator | None, model, tokenizer, metrics: dict[str, Any],
                  *, source: str, reference=None, extra: dict[str, Any] | None = None, engine=None) -> Artifact:
    """A trained policy: the policy-vs-reference evaluation (if enabled), then `finish`.

    One process without DeepSpeed evaluates the models in memory (under LoRA the reference is the
    policy with its adapter disabled). Under DeepSpeed or several processes the model is saved first
    (ZeRO-3 shards gathered into one checkpoint), then rank 0 evaluates that saved model against the
    reference loaded from `source` while the other ranks wait; the result reaches every rank.
    """
    cfg = ctx.cfg
    if not distributed.launched() and not distributed.uses_deepspeed(cfg):
        if evaluator is not None:
            if reference is None and cfg.peft.method == "none":
                reference = load_reference(cfg, source, tokenizer)
            metrics["policy_eval"] = evaluator.run(ctx, model, reference)
        return finish(ctx, kind="policy", model=model, tokenizer=tokenizer, metrics=metrics, extra=extra)
    from ..models import save_model

    saved = save_model(model, tokenizer, ctx.run_dir, engine)
    distributed.barrier()
    if evaluator is not None:
        metrics["policy_eval"] = distributed.on_main(_evaluate_saved, ctx, evaluator, saved[0], source)
    return finish(ctx, kind="policy", model=None, tokenizer=tokenizer, metrics=metrics, extra=extra, saved=saved)


def _evaluate_saved(ctx: StageContext, evaluator: PolicyEvaluator, model_dir: str, source: str) -> dict:
    from transformers import AutoModelForCausalLM

    with distributed.zero3_init_off():
        policy = AutoModelForCausalLM.from_pretrained(ctx.run_dir / model_dir)
        reference = load_reference(ctx.cfg, source, evaluator.tokenizer)
    return evaluator.run(ctx, policy, reference)


@dataclass
class PolicyEvaluator:
    """The `evaluation:` node made ready: held-out prompts, judge, reward model, sampling settings."""

    tokenizer: Any
    prompts: list[str]
    judge: Any
    reward: Any
    gen: Any
    n_show: int

    @classmethod
    def from_config(cls, cfg: DictConfig, tokenizer, splits=None) -> PolicyEvaluator | None:
        """None when `evaluation.enabled` is false. Loads prompts, judge and RM before any training, so
        a typo there fails in seconds, not after the stage has trained."""
        ev = cfg.evaluation
        if not ev.enabled:
            return None
        from ..generation import GenerationConfig, RewardScorer
        from ..reward.functions import resolve

        if ev.data is not None:
            from rlhf.data import DataConfig, load_splits

            data_cfg = DataConfig.from_mapping(OmegaConf.to_container(ev.data, resolve=True))
            rows = load_splits(data_cfg, tokenizer=tokenizer, max_length=int(cfg.model.max_length),
                               truncation_side="left").eval
            where = f"evaluation.data ({data_cfg.source})"
        else:
            if splits is None:
                splits = load_data(cfg, tokenizer, truncation_side="left")
            rows, where = splits.eval, f"the held-out split of data ({cfg.data.source})"
        prompts = list(dict.fromkeys(r["prompt"] for r in rows if r.get("prompt")))[: int(ev.max_prompts)]
        if not prompts:
            raise UserError(f"evaluation: no held-out prompts in {where}; set evaluation.data or evaluation.enabled=false")
        reward = RewardScorer.from_artifact(ev.reward_model, what="evaluation.reward_model") if ev.reward_model else None
        gen = GenerationConfig.from_mapping(OmegaConf.to_container(ev.generation, resolve=True))
        judge = resolve(str(ev.judge), "evaluation.judge") if ev.judge else None
        return cls(tokenizer, prompts, judge, reward, gen, int(ev.n_show))

    def run(self, ctx: StageContext, policy, reference) -> dict:
        """Evaluate, write eval.json into the run dir, log to W&B, print the table."""
        from ..artifacts import write_json_atomic
        from ..evaluation import evaluate_policy, format_eval, log_eval_to_wandb

        result = evaluate_policy(policy, self.tokenizer, self.prompts, self.gen, reference=reference,
                                 judge=self.judge, reward=self.reward, n_show=self.n_show)
        write_json_atomic(ctx.run_dir / "eval.json", result)
        log_eval_to_wandb(result)
        print(format_eval(result), flush=True)
        return {k: v for k, v in result.items() if k not in ("samples", "generation", "per_sample")}


def load_reference(cfg: DictConfig, source: str, tokenizer):
    """The frozen reference for evaluation: the policy's starting weights, loaded again (whole, even
    while a ZeRO-3 config is live: only models a DeepSpeed engine owns are partitioned)."""
    from transformers import AutoModelForCausalLM

    from ..models import _finish, _from_pretrained

    with distributed.zero3_init_off():
        model = _from_pretrained(AutoModelForCausalLM, source, cfg.model, cfg.peft)
    none_peft = OmegaConf.create({"method": "none"})
    model = _finish(model, cfg.model, none_peft, tokenizer, task_type="CAUSAL_LM")
    return model.eval()
