"""A stage run's life around its trainer: the run dir owned (`stage_run`), the run opened (`ctx.begin()`:
seed, config.yaml, tracking), the TRL config, training under resume, the model saved and the manifest
written last (`finish`). What a stage reads is in `inputs.py`; the policy evaluation in `evaluator.py`.

Every stage follows one protocol:

    with common.stage_run(cfg, run_dir) as ctx:
        ...  # read the inputs and build what can fail fast (data, judges, reward models)
        ctx.begin()
        ...  # build the models, train
        return common.finish(ctx, kind=..., model=..., tokenizer=..., metrics=...)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .. import distributed
from ..errors import UserError
from ..run.artifacts import Artifact, RunDir, config_hash, write_artifact
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

    def begin(self) -> None:
        """Called inside the RunDir context, before any model is built: seed every generator (score heads,
        value heads, dropout and samplers are then the same in every run of this config), write the
        resolved config (rank 0), set up reporting (the W&B run opens with the whole composed config, its
        job_type the stage; `rlhf.tracking`)."""
        from transformers import set_seed

        set_seed(int(self.cfg.seed))
        if distributed.is_main():
            from ..run import fingerprint
            from ..run.resume import checkpoints

            changed = fingerprint.check_and_record(self.cfg, self.run_dir,
                                                   bool(checkpoints(self.run_dir / "checkpoints")))
            if changed:
                self.resume_info = {**(self.resume_info or {}), **changed}
            OmegaConf.save(self.cfg, self.run_dir / "config.yaml", resolve=True)
        self.report_to = setup_reporting(self.cfg.logger, self.run_dir, self.run_name,
                                         job_type=str(self.cfg.stage.name))
        self.tracker = Tracker(self.run_dir, self.report_to, active=distributed.is_main())
        self.tracker.start(OmegaConf.to_container(self.cfg, resolve=True))

    def train(self, trainer):
        """`trainer.train()`: resumed from the newest complete checkpoint of an interrupted run in this
        run dir, under the non-finite guard; `train_loss` covers the whole run (rlhf.run.resume.train)."""
        from ..run import resume

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
    An interrupted run there is resumed only under the config that started it (rlhf.run.resume)."""
    from ..run import resume

    rd = RunDir(run_dir)
    rd.config_hash = config_hash(OmegaConf.to_container(cfg, resolve=True))
    try:
        resume_info = distributed.on_main(resume.check_relaunch, cfg, rd.path)
    except UserError:
        rd.release()
        raise
    run_name = f"{cfg.experiment_name}/{cfg.stage.name}/{Path(run_dir).name}"
    return rd, StageContext(cfg, rd.path, run_name, "none", resume_info=resume_info)


@contextlib.contextmanager
def stage_run(cfg: DictConfig, run_dir: Path):
    """The run dir owned for the stage's whole run (`start`; released, marked or removed on the way out
    by `rlhf.run.artifacts.RunDir`), yielding the StageContext. The stage calls `ctx.begin()` once its
    inputs are read and before it builds a model."""
    rd, ctx = start(cfg, run_dir)
    with rd:
        yield ctx


def track(ctx: StageContext, trainer) -> None:
    """Keep a TRL trainer's logged steps in the run dir's history.jsonl, whatever the logger.
    Every TRL stage calls it once its trainer is built, so QLoRA's adapters are set to the 4-bit
    layers' compute dtype here too (rlhf.quantization.adapters_in_compute_dtype)."""
    from ..quantization import adapters_in_compute_dtype

    trainer.add_callback(history_callback(ctx.tracker))
    adapters_in_compute_dtype(trainer.model)


def save(ctx: StageContext, model, tokenizer, engine=None) -> tuple[str, str | None]:
    """`rlhf.run.saving.save_model` into the run dir; an adapter also keeps the resized embeddings when
    the vocabulary outgrew its base (`outputs.grown_vocab`). Every rank calls it."""
    from ..run.saving import save_model
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
    from ..run.guards import check_published

    # Every tensor finite before anything is published (rank 0 reads what it saved; all ranks learn the verdict).
    value_dir = (extra or {}).get("value_dir")
    distributed.on_main(check_published, ctx.run_dir, [model_dir, adapter_dir, value_dir])
    metrics = {**metrics, **ctx.train_info}
    extra = {**(extra or {}), **({"resume": ctx.resume_info} if ctx.resume_info else {})}
    base = cfg.model.name_or_path
    if cfg.model.init_from:
        from ..run.artifacts import read_artifact

        base = read_artifact(cfg.model.init_from).base_model
    runs, start = outputs.lineage(cfg, ctx.run_dir)
    from ..run import fingerprint

    if (data := fingerprint.record_of(cfg)) is not None:  # what this run trained on, by content
        runs[-1]["data_fingerprint"] = data["fingerprint"]
        extra["data"] = data
        fingerprint.forget(cfg)
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
