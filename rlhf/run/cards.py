"""Model cards: a README.md in every saved model folder (model/, adapter/, value/), written with
huggingface_hub's `ModelCard` / `ModelCardData`, so the folder says what it is wherever it goes:
its base model, the stages that made it (the lineage through `model.init_from`), its data, its key
metrics, and the plain transformers / peft / TRL lines that load it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from .artifacts import Artifact
from .portable import REWARD_CALL

TITLES = {"policy": "Policy", "reward": "Reward model", "adapter": "LoRA adapter", "value": "Value model"}


def _metrics(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict) and key in ("policy_eval", "eval"):
            rows += [(f"{key}.{k}", v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            rows.append((key, value))
    return [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in rows]


def _published(record: dict | None) -> dict | None:
    """`monitor.publish=best` (rlhf.monitor): which step was published and why, and the figures of that
    step beside the last step's, as rows (figure, published, last)."""
    if not record:
        return None
    best, last = record.get("best", {}), record.get("last", {})
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    rows = [(k, fmt(best.get(k)), fmt(last.get(k))) for k in dict.fromkeys([*best, *last])]
    return {"step": record["step"], "last_step": record["last_step"], "why": record["why"], "rows": rows}


def _hub_id(name: str) -> str | None:
    """A hub repo id (for the card's metadata), not a local path."""
    return None if not name or Path(name).exists() or name.startswith(("/", ".", "~")) else name


def write_card(folder: Path, what: str, art: Artifact, *, base_model: str, usage: dict[str, Any]) -> Path:
    """README.md in `folder` (model/, adapter/ or value/ of a finished run) for `what`: policy,
    reward, adapter or value; `usage`: what the loading lines need besides the path (a reward
    model's `link` and `name`, a grown vocabulary's `vocab_size` and `base_vocab_size`)."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    lib = "peft" if what == "adapter" else "transformers"
    tag = {"policy": "text-generation", "reward": "text-classification", "value": "text-classification"}
    data = ModelCardData(library_name=lib, pipeline_tag=tag.get(what), tags=["rlhf", art.stage, what],
                         base_model=_hub_id(art.adapter_base if what == "adapter" else base_model))
    summary = {
        "policy": f"A policy (causal LM) trained by the `{art.stage}` stage.",
        "reward": f"A reward model (one raw score per sequence) trained by the `{art.stage}` stage.",
        "adapter": f"The LoRA adapter of the `{art.stage}` stage; `../model` holds it merged into its base.",
        "value": "The value model (critic) PPO trained beside the policy in `../model`.",
    }[what]
    template = resources.files("rlhf.templates").joinpath("model_card.jinja").read_text(encoding="utf-8")
    card = ModelCard.from_template(
        data, template_str=template, title=f"{TITLES[what]} `{Path(art.run_dir).name}`", summary=summary,
        what=what, path=str(folder), reward_call=REWARD_CALL, base_model=base_model, lineage=art.lineage,
        adapter_base=art.adapter_base if what == "adapter" else None, metrics=_metrics(art.metrics),
        published=_published(art.extra.get("published")) if what in ("policy", "adapter") else None, **usage)
    card.save(folder / "README.md")
    return folder / "README.md"
