"""What a finished stage writes beside its model, so the model works elsewhere: the lineage and the
adapter's real base in the manifest, the reward model's and the adapter's portable files
(`rlhf.run.portable`), and a model card in each model folder (`rlhf.run.cards`)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from ..run.artifacts import Artifact, read_artifact

log = logging.getLogger(__name__)


def lineage(cfg: DictConfig, run_dir: Path) -> tuple[list[dict], str]:
    """(the runs that made this model, oldest first and this one last; the weights it started from:
    the init_from artifact's model dir, else `model.name_or_path`)."""
    own = {"stage": str(cfg.stage.name), "run_dir": str(Path(run_dir).resolve()), "data": _data(cfg)}
    if not cfg.model.init_from:
        return [own], str(cfg.model.name_or_path)
    parent = read_artifact(cfg.model.init_from)
    before = parent.lineage or [{"stage": parent.stage, "run_dir": parent.run_dir, "data": None}]
    return [*before, own], str(parent.path(parent.model_dir))


def _data(cfg: DictConfig) -> str | None:
    data = cfg.get("data")
    return str(data.source) if data is not None and data.get("source") else None


def grown_vocab(cfg: DictConfig, start: str, tokenizer) -> int | None:
    """The base's vocabulary size when the tokenizer outgrew it (a chat template added its markers and
    the embeddings were resized), else None: then an adapter must carry the resized embeddings."""
    if tokenizer is None:
        return None
    from ..models import load_config

    base_vocab = getattr(load_config(cfg.model, start).get_text_config(), "vocab_size", None)
    return base_vocab if isinstance(base_vocab, int) and len(tokenizer) > base_vocab else None


def export(cfg: DictConfig, art: Artifact, tokenizer, base_vocab: int | None) -> None:
    """Rank 0, after the model is saved and before the manifest: portable files and model cards."""
    from ..run import portable
    from ..run.cards import write_card

    run_dir = Path(art.run_dir)
    usage: dict = {}
    if art.kind == "reward" and art.model_dir:
        name = portable.reward_name(str(cfg.experiment_name), run_dir)
        portable.export_reward_model(run_dir / art.model_dir, tokenizer, int(art.extra["max_length"]), name)
        link = portable.link_reward_name(run_dir, art.model_dir, name)
        art.extra.update(reward_name=name, reward_link=link)
        usage.update(name=name, link=str(run_dir / (link or art.model_dir)))
    if art.adapter_dir:
        art.extra["adapter_config_base"] = portable.export_adapter(run_dir / art.adapter_dir, art.adapter_base)
        if base_vocab is not None:
            art.extra.update(vocab_size=len(tokenizer), base_vocab_size=base_vocab)
            usage.update(vocab_size=len(tokenizer), base_vocab_size=base_vocab)
        write_card(run_dir / art.adapter_dir, "adapter", art, base_model=art.base_model, usage=usage)
    if art.model_dir and art.model_dir != art.adapter_dir:
        write_card(run_dir / art.model_dir, art.kind, art, base_model=art.base_model, usage=usage)
    if art.extra.get("value_dir"):
        write_card(run_dir / art.extra["value_dir"], "value", art, base_model=art.base_model, usage=usage)
