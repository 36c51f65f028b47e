"""What every stage does around its trainer: run dir, data, TRL config, artifact, W&B close."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

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
        fixed.update(extra)
        return build_trainer_config(config_cls, self.cfg.trainer, **fixed)

    def last_checkpoint(self) -> str | None:
        """An interrupted run re-launched with the same run_dir resumes from its last checkpoint."""
        from transformers.trainer_utils import get_last_checkpoint

        ckpt_dir = self.run_dir / "checkpoints"
        return get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None


def start(cfg: DictConfig, run_dir: Path) -> tuple[RunDir, StageContext]:
    rd = RunDir(run_dir)
    run_name = f"{cfg.experiment_name}/{cfg.stage.name}/{Path(run_dir).name}"
    return rd, StageContext(cfg, rd.path, run_name, "none")


def begin(ctx: StageContext) -> None:
    """Called inside the RunDir context: write the resolved config, set up reporting."""
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


def finish(ctx: StageContext, *, kind: str, model, tokenizer, metrics: dict[str, Any]) -> Artifact:
    """Save the model, then the manifest (last, atomically), then close the W&B run."""
    from ..models import save_model

    model_dir, adapter_dir = save_model(model, tokenizer, ctx.run_dir)
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
    )
    write_artifact(ctx.run_dir, art)
    art.run_dir = str(ctx.run_dir)
    # Checkpoints exist to resume an interrupted run; the finished model is in model/.
    shutil.rmtree(ctx.run_dir / "checkpoints", ignore_errors=True)
    finish_run(metrics)
    log.info("artifact: %s", ctx.run_dir)
    return art
