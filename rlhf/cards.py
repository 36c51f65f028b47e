"""Model cards: a README.md in every saved model folder (model/, adapter/, value/), written with
huggingface_hub's `ModelCard` / `ModelCardData`, so the folder says what it is wherever it goes:
its base model, the stages that made it (the lineage through `model.init_from`), its data, its key
metrics, and the plain transformers / peft / TRL lines that load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .artifacts import Artifact
from .portable import REWARD_CALL

TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

## Lineage

| step | stage | run | data |
|---|---|---|---|
| 0 | pretrained | `{{ base_model }}` | |
{% for s in lineage -%}
| {{ loop.index }} | {{ s.stage }}{% if loop.last %} (this run){% endif %} | `{{ s.run_dir }}` | {{ s.data or "" }} |
{% endfor %}
{%- if adapter_base %}
The adapter applies to `{{ adapter_base }}` (the weights this run started from).
{% endif %}
## Metrics

{% if metrics -%}
| metric | value |
|---|---|
{% for k, v in metrics -%}
| {{ k }} | {{ v }} |
{% endfor %}
{%- else -%}
(none recorded)
{%- endif %}

## How to load

```python
{{ usage }}
```
"""

USAGE = {
    "policy": """from transformers import pipeline

generator = pipeline("text-generation", model="{path}")
print(generator("Once upon a time", max_new_tokens=64)[0]["generated_text"])""",
    "reward": """from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{path}")
model = AutoModelForSequenceClassification.from_pretrained("{path}")
# the framework's score: [BOS] prompt response [EOS], the prompt cut from its start to fit
reward = model(**{call}).logits[0, 0]
# the same through a pipeline (raw score: problem_type is "regression")
#   pipeline("text-classification", model="{path}")({{"text": prompt, "text_pair": response}}, truncation="only_first")
# a conversation (message list) that fits model_max_length:
#   model(**tokenizer.apply_chat_template(messages + [{{"role": "assistant", "content": reply}}],
#                                         return_dict=True, return_tensors="pt")).logits[0, 0]
# TRL's GRPOTrainer names a reward model passed by path after its last component: pass
#   reward_funcs=["{link}"]  (a link to this folder) to log it as rewards/{name}""",
    "adapter": """import os

from peft import PeftConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

adapter = "{path}"
base = os.path.join(adapter, PeftConfig.from_pretrained(adapter).base_model_name_or_path)  # relative to the adapter
tokenizer = AutoTokenizer.from_pretrained(adapter)
model = AutoModelForCausalLM.from_pretrained(base)
{resize}model = PeftModel.from_pretrained(model, adapter)""",
    "value": """from transformers import AutoModelForSequenceClassification

# PPO's critic: the `score` head of this sequence classifier applied at every position gives V(s_t)
model = AutoModelForSequenceClassification.from_pretrained("{path}")""",
}


TITLES = {"policy": "Policy", "reward": "Reward model", "adapter": "LoRA adapter", "value": "Value model"}


def _metrics(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict) and key in ("policy_eval", "eval"):
            rows += [(f"{key}.{k}", v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            rows.append((key, value))
    return [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in rows]


def _hub_id(name: str) -> str | None:
    """A hub repo id (for the card's metadata), not a local path."""
    return None if not name or Path(name).exists() or name.startswith(("/", ".", "~")) else name


def write_card(folder: Path, what: str, art: Artifact, *, base_model: str, usage: dict[str, str]) -> Path:
    """README.md in `folder` (model/, adapter/ or value/ of a finished run) for `what`: policy,
    reward, adapter or value."""
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
    card = ModelCard.from_template(
        data, template_str=TEMPLATE, title=f"{TITLES[what]} `{Path(art.run_dir).name}`", summary=summary,
        base_model=base_model, lineage=art.lineage, adapter_base=art.adapter_base if what == "adapter" else None,
        metrics=_metrics(art.metrics), usage=USAGE[what].format(path=str(folder), call=REWARD_CALL, **usage))
    card.save(folder / "README.md")
    return folder / "README.md"
