"""What every stage does around its trainer: run dir, data, TRL config, evaluation, artifact, W&B close."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .. import distributed
from ..artifacts import Artifact, RunDir, config_hash, write_artifact
from ..errors import UserError
from ..tracking import Tracker, finish_run, history_callback, setup_reporting

log = logging.getLogger(__name__)


def build_trainer_config(config_cls: type, trainer_cfg, **fixed: Any):
    """The trainer config: the `trainer:` node (checked by `rlhf.config.validate`) plus what the stage
    decides. On a machine without CUDA, TRL's bf16 default would raise: run on the CPU in fp32."""
    given = OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) else dict(trainer_cfg)
    kwargs = {**given, **fixed}
    import torch

    if not torch.cuda.is_available() and "use_cpu" in {f.name for f in dataclasses.fields(config_cls)}:
        kwargs.setdefault("use_cpu", True)
        kwargs["bf16"] = False
        kwargs["fp16"] = False
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise UserError(f"trainer: {config_cls.__name__} refused the options: {e}") from None


@dataclass
class StageContext:
    cfg: DictConfig
    run_dir: Path
    run_name: str
    report_to: str
    resume_info: dict | None = None  # set when an interrupted run is resumed under a changed config
    train_info: dict = field(default_factory=dict)  # whole-run facts of `train()` for metrics.json
    tracker: Tracker | None = None

    def trainer_config(self, config_cls: type, **extra: Any):
        """The TRL config for this run: the `trainer:` node plus what the stage decides. The stage's
        sequences are already cut to `model.max_length` by its encoder: TRL gets the same length, so
        its own truncation and filtering are no-ops."""
        fixed = dict(
            output_dir=str(self.run_dir / "checkpoints"),
            seed=int(self.cfg.seed),
            data_seed=int(self.cfg.seed),
            report_to=self.report_to,
            run_name=self.run_name,
            logging_nan_inf_filter=False,  # a NaN loss is logged as NaN, not replaced by the running mean
        )
        if "max_length" in {f.name for f in dataclasses.fields(config_cls)}:
            fixed["max_length"] = int(self.cfg.model.max_length)
        if distributed.uses_deepspeed(self.cfg):  # conf/deepspeed/: "auto" values are filled in by TRL/transformers
            fixed["deepspeed"] = OmegaConf.to_container(self.cfg.deepspeed, resolve=True)
        fixed.update(extra)
        return build_trainer_config(config_cls, self.cfg.trainer, **fixed)

    def train(self, trainer):
        """`trainer.train()`: resumed from the newest complete checkpoint of an interrupted run in this
        run dir, under the non-finite guard; `train_loss` covers the whole run (rlhf.resume.train)."""
        from .. import resume

        out = resume.train(trainer, self.cfg, self.run_dir)
        self.train_info = {k: out.metrics[k] for k in ("train_steps", "resumed_from_step", "nonfinite_skipped_steps")
                           if k in out.metrics}
        return out


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
    """The run dir, owned by this run (locked; a finished or live one refused), and the stage context.
    An interrupted run there is resumed only under the config that started it (rlhf.resume)."""
    from .. import resume

    rd = RunDir(run_dir)
    rd.config_hash = config_hash(OmegaConf.to_container(cfg, resolve=True))
    try:
        resume_info = distributed.on_main(resume.check_relaunch, cfg, rd.path)
    except UserError:
        rd.release()
        raise
    run_name = f"{cfg.experiment_name}/{cfg.stage.name}/{Path(run_dir).name}"
    return rd, StageContext(cfg, rd.path, run_name, "none", resume_info=resume_info)


def begin(ctx: StageContext) -> None:
    """Called inside the RunDir context, before any model is built: seed every generator (score heads,
    value heads, dropout and samplers are then the same in every run of this config), write the
    resolved config (rank 0), set up reporting (the W&B run opens with the whole composed config, its
    job_type the stage; `rlhf.tracking`)."""
    from transformers import set_seed

    set_seed(int(ctx.cfg.seed))
    if distributed.is_main():
        OmegaConf.save(ctx.cfg, ctx.run_dir / "config.yaml", resolve=True)
    ctx.report_to = setup_reporting(ctx.cfg.logger, ctx.run_dir, ctx.run_name, job_type=str(ctx.cfg.stage.name))
    ctx.tracker = Tracker(ctx.run_dir, ctx.report_to, active=distributed.is_main())
    ctx.tracker.start(OmegaConf.to_container(ctx.cfg, resolve=True))


def track(ctx: StageContext, trainer) -> None:
    """Keep a TRL trainer's logged steps in the run dir's history.jsonl, whatever the logger."""
    trainer.add_callback(history_callback(ctx.tracker))


def data_config(node):
    from rlhf.data import DataConfig

    return DataConfig.from_mapping(OmegaConf.to_container(node, resolve=True))


def load_data(cfg: DictConfig, encoder):
    """Validated and encoded train/eval rows of the stage's data config (raises UserError listing bad
    rows, or drops them under data.on_invalid=drop); `splits.train_features` is what the trainer gets."""
    from rlhf.data import load_splits

    splits = load_splits(data_config(cfg.data), encoder)
    led = splits.ledger
    if led.dropped:
        log.warning("dropped %d invalid rows (data.on_invalid=drop): %s", sum(led.dropped.values()),
                    ", ".join(f"{k}={v}" for k, v in sorted(led.dropped.items())))
    log.info("data %s: %d records -> %d rows, %d valid: %d train / %d eval %s rows (%d / %d truncated: %s)",
             splits.source, led.read, led.rows, led.valid, led.train, led.eval, splits.kind, led.truncated_train,
             led.truncated_eval, encoder.rule)
    if not splits.train:
        raise UserError(f"data: no training rows left in {splits.source}")
    return splits


# The row kinds of the stages that sample from prompts: every kind offers prompts (rlhf.data.PromptEncoder.kinds;
# kept here as plain names so a stage's module does not import the data layer at start-up).
PROMPT_KINDS = ("sft", "pair", "ranked", "prompt", "unpaired")


def prompt_encoder(cfg: DictConfig, tokenizer):
    """The encoder of the stages that sample from prompts (generate, eval, ppo, grpo, rloo)."""
    from rlhf.data import PromptEncoder

    return PromptEncoder(tokenizer, int(cfg.model.max_length))


def row_metrics(splits, trained: int, evaluated: int) -> dict[str, Any]:
    """The row ledger for metrics.json: read -> valid -> dropped by reason -> truncated -> trained;
    `trained`/`evaluated` are the lengths of the datasets the trainer holds."""
    splits.ledger.trained, splits.ledger.evaluated = trained, evaluated
    led = splits.ledger
    return {"rows": led.as_dict(), "train_rows": led.train, "eval_rows": led.eval, "dropped_rows": dict(led.dropped),
            "truncated_rows": led.truncated_train + led.truncated_eval}


def online_rl_inputs(cfg: DictConfig):
    """What the online RL stages (ppo, grpo, rloo) start from: the policy's source and artifact, its
    tokenizer, the data splits (prompts encoded), and the distinct prompts of the train split with
    their ids, in order."""
    from ..models import load_tokenizer, resolve_source

    source, init_art = resolve_source(cfg.model, ("policy",))
    tokenizer = load_tokenizer(cfg.model, source)
    splits = load_data(cfg, prompt_encoder(cfg, tokenizer))
    prompts, prompt_ids = distinct_prompts(splits.train, splits.train_features)
    return source, init_art, tokenizer, splits, prompts, prompt_ids


def distinct_prompts(rows, features) -> tuple[list, list[list[int]]]:
    """The distinct prompts of encoded rows (first occurrence order) and their ids."""
    from rlhf.data import prompt_of

    seen: dict[str, int] = {}
    prompts, ids = [], []
    for row, feat in zip(rows, features, strict=True):
        p = prompt_of(row)
        key = repr(p)
        if key not in seen:
            seen[key] = len(prompts)
            prompts.append(p)
            ids.append(feat["prompt_ids"])
    return prompts, ids


def save(ctx: StageContext, model, tokenizer, engine=None) -> tuple[str, str | None]:
    """`rlhf.models.save_model` into the run dir; an adapter also keeps the resized embeddings when
    the vocabulary outgrew its base (`outputs.grown_vocab`). Every rank calls it."""
    from ..models import save_model
    from .outputs import grown_vocab, lineage

    grown = hasattr(model, "peft_config") and grown_vocab(ctx.cfg, lineage(ctx.cfg, ctx.run_dir)[1], tokenizer)
    return save_model(model, tokenizer, ctx.run_dir, engine, embeddings=True if grown else "auto")


def finish(ctx: StageContext, *, kind: str, model, tokenizer, metrics: dict[str, Any],
           extra: dict[str, Any] | None = None, saved: tuple[str | None, str | None] | None = None,
           engine=None) -> Artifact:
    """Save the model (if any, and not `saved` already), then the manifest (last, atomically), then
    close the W&B run. Every rank calls it (saving a ZeRO-3 model is collective); rank 0 writes, and
    the others wait for the manifest, so the next stage of a pipeline finds it on every rank."""
    from . import outputs

    if saved is not None:
        model_dir, adapter_dir = saved
    else:
        model_dir, adapter_dir = save(ctx, model, tokenizer, engine) if model is not None else (None, None)
    cfg = ctx.cfg
    from ..guards import check_published

    # Every tensor finite before anything is published (rank 0 reads what it saved; all ranks learn the verdict).
    value_dir = (extra or {}).get("value_dir")
    distributed.on_main(check_published, ctx.run_dir, [model_dir, adapter_dir, value_dir])
    metrics = {**metrics, **ctx.train_info}
    extra = {**(extra or {}), **({"resume": ctx.resume_info} if ctx.resume_info else {})}
    base = cfg.model.name_or_path
    if cfg.model.init_from:
        from ..artifacts import read_artifact

        base = read_artifact(cfg.model.init_from).base_model
    runs, start = outputs.lineage(cfg, ctx.run_dir)
    art = Artifact(
        stage=cfg.stage.name, kind=kind, model_dir=model_dir, adapter_dir=adapter_dir,
        base_model=str(base), tokenizer_dir=model_dir, adapter_base=start if adapter_dir else None, lineage=runs,
        config_hash=config_hash(OmegaConf.to_container(cfg, resolve=True)),
        metrics={k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool | dict | list | None)},
        extra=dict(extra or {}), run_dir=str(ctx.run_dir),
    )
    if distributed.is_main():
        outputs.export(cfg, art, tokenizer, outputs.grown_vocab(cfg, start, tokenizer) if adapter_dir else None)
        write_artifact(ctx.run_dir, art)
        # Checkpoints exist to resume an interrupted run; the finished model is in model/.
        shutil.rmtree(ctx.run_dir / "checkpoints", ignore_errors=True)
        if ctx.tracker is not None:
            ctx.tracker.close()
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
    if evaluator is not None and cfg.evaluation.get("reference"):  # measure against a given policy instead
        source = policy_model_dir(cfg.evaluation.reference, "evaluation.reference")
        reference = load_reference(cfg, source, tokenizer) if not distributed.launched() else None
    if not distributed.launched() and not distributed.uses_deepspeed(cfg):
        if evaluator is not None:
            if reference is None and cfg.peft.method == "none":
                reference = load_reference(cfg, source, tokenizer)
            metrics["policy_eval"] = evaluator.run(ctx, model, reference)
        return finish(ctx, kind="policy", model=model, tokenizer=tokenizer, metrics=metrics, extra=extra)
    saved = save(ctx, model, tokenizer, engine)
    distributed.barrier()
    if evaluator is not None:
        metrics["policy_eval"] = distributed.on_main(_evaluate_saved, ctx, evaluator, saved[0], source)
    return finish(ctx, kind="policy", model=None, tokenizer=tokenizer, metrics=metrics, extra=extra, saved=saved)


def _evaluate_saved(ctx: StageContext, evaluator: PolicyEvaluator, model_dir: str, source: str) -> dict:
    from ..models import load_frozen_policy

    policy = load_frozen_policy(ctx.cfg.model, str(ctx.run_dir / model_dir), evaluator.tokenizer)
    return evaluator.run(ctx, policy, load_reference(ctx.cfg, source, evaluator.tokenizer))


@dataclass
class PolicyEvaluator:
    """The `evaluation:` node made ready: held-out prompts (encoded), judge, reward model, sampling."""

    tokenizer: Any
    prompts: list
    prompt_ids: list[list[int]]
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
        from rlhf.data import load_splits

        from ..judges import resolve
        from ..schema import Generation

        encoder = prompt_encoder(cfg, tokenizer)
        if ev.data is not None:
            held_out = load_splits(data_config(ev.data), encoder)
            rows, feats, where = held_out.eval, held_out.eval_features, f"evaluation.data ({held_out.source})"
        else:
            if splits is None:
                splits = load_data(cfg, encoder)
            encoded = encoder.encode(splits.eval)
            rows = [r for r, e in zip(splits.eval, encoded, strict=True) if e.problem is None]
            feats = [e.features for e in encoded if e.problem is None]
            where = f"the held-out split of data ({cfg.data.source})"
        prompts, ids = distinct_prompts(rows, feats)
        prompts, ids = prompts[: int(ev.max_prompts)], ids[: int(ev.max_prompts)]
        if not prompts:
            raise UserError(f"evaluation: no held-out prompts in {where}; set evaluation.data or evaluation.enabled=false")
        conv = any(isinstance(p, list) for p in prompts)
        reward = reward_scorer(cfg, ev.reward_model, "evaluation.reward_model", conv) if ev.reward_model else None
        gen = Generation.from_mapping(OmegaConf.to_container(ev.generation, resolve=True))
        judge = resolve(str(ev.judge), "evaluation.judge") if ev.judge else None
        return cls(tokenizer, prompts, ids, judge, reward, gen, int(ev.n_show))

    def run(self, ctx: StageContext, policy, reference) -> dict:
        """Evaluate, write eval.json into the run dir, log to W&B, print the table."""
        from ..artifacts import write_json_atomic
        from ..evaluation import evaluate_policy, format_eval
        from ..models import stop_token_ids

        result = evaluate_policy(policy, self.tokenizer, self.prompts, self.prompt_ids, self.gen,
                                 stop_ids=stop_token_ids(self.tokenizer), reference=reference, judge=self.judge,
                                 reward=self.reward, n_show=self.n_show)
        write_json_atomic(ctx.run_dir / "eval.json", result)
        if ctx.tracker is not None:
            ctx.tracker.log_eval(result, "eval", ctx.tracker.last_step, summary=True)
        print(format_eval(result), flush=True)
        return {k: v for k, v in result.items() if k not in ("samples", "generation", "per_sample")}


def reward_scorer(cfg: DictConfig, run_dir: str, what: str, conversational: bool = False):
    """A reward-model artifact as a scorer, loaded in the run's dtype (`rlhf.models`). Conversational
    prompts need a reward model whose tokenizer renders conversations (it was trained on them)."""
    from rlhf.data.chat import has_template
    from rlhf.reward import RewardScorer

    from ..models import load_reward_artifact

    model, tok, max_length = load_reward_artifact(str(run_dir), cfg.model, what)
    if conversational and not has_template(tok):
        raise UserError(f"{what}: the prompts are conversations but the reward model in {run_dir} has no chat template "
                        "(it was trained on plain text): train it on conversational rows, or give plain-text prompts")
    return RewardScorer(model, tok, max_length)


def policy_model_dir(run_dir: str, what: str) -> str:
    """The model directory of a policy artifact (`run_dir`), checked to be one (UserError naming `what`)."""
    from ..artifacts import read_artifact

    art = read_artifact(run_dir, expect_kinds=("policy",), what=what)
    return str(art.path(art.model_dir))


def load_reference(cfg: DictConfig, source: str, tokenizer):
    """The frozen reference for evaluation: the policy's starting weights, loaded again (whole, even
    while a ZeRO-3 config is live: only models a DeepSpeed engine owns are partitioned)."""
    from ..models import load_frozen_policy

    return load_frozen_policy(cfg.model, source, tokenizer)
