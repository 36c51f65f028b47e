"""Parameter counts of a local checkpoint from its safetensors headers: no torch model is built.

`rlhf check` needs the size of the model a stage will train. Building it on the meta device is
exact for any architecture but costs seconds (importing transformers' modeling code, building every
module); a safetensors file starts with a JSON header listing every tensor's shape, so the same
counts come from reading a few kilobytes. This path covers the decoder families whose
sequence-classification head is transformers' `GenericForSequenceClassification` (a bias-free
`score` Linear of hidden_size -> num_labels) and LoRA on their attention/MLP projections;
anything else returns None and `rlhf.memory.model_size` builds the model on the meta device.
A test checks both paths give the same counts.
"""

from __future__ import annotations

import json
import struct
from math import prod
from pathlib import Path
from typing import Any

# model_type values whose *ForSequenceClassification is GenericForSequenceClassification (bias-free
# `score` on the last hidden state) and whose projections below are plain nn.Linear layers.
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
LORA_LEAVES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def read_shapes(model_dir: Path) -> dict[str, list[int]] | None:
    """Tensor name -> shape from model.safetensors or its sharded index; None if neither is there."""
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [model_dir / s for s in shards]
    else:
        return None
    shapes: dict[str, list[int]] = {}
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        shapes.update({k: v["shape"] for k, v in header.items() if k != "__metadata__"})
    return shapes


def count(model_dir: str | Path, model: str, lora: dict[str, Any] | None,
          trust_remote_code: bool = False) -> dict[str, Any] | None:
    """{architecture, params, trainable, largest_layer, dtype, block_linear} of the `model` a stage builds from
    `model_dir` ("causal", or "score": a sequence classifier with one output; the stage's FACTS.model),
    or None where this path does not apply. lora: {"r": int, "target_modules": [...]} when LoRA/QLoRA
    is on, else None."""
    model_dir = Path(model_dir)
    config_file = model_dir / "config.json"
    if trust_remote_code or not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    arch = (config.get("architectures") or [""])[0]
    if config.get("model_type") not in FAMILIES or not arch.endswith(("ForCausalLM", "ForSequenceClassification")):
        return None
    targets = None if lora is None else lora.get("target_modules")
    if lora is not None and (not isinstance(targets, list) or not set(targets) <= set(LORA_LEAVES)):
        return None
    shapes = read_shapes(model_dir)
    if shapes is None:
        return None
    numel = {k: prod(s) for k, s in shapes.items()}
    tied = bool(config.get("tie_word_embeddings", False))
    if model == "score":
        if arch.endswith("ForCausalLM"):  # the LM head goes, a score head of hidden_size -> 1 comes
            numel = {k: v for k, v in numel.items() if not k.startswith("lm_head.")}
            numel["score.weight"] = int(config["hidden_size"])
            arch = arch.replace("ForCausalLM", "ForSequenceClassification")
        elif shapes.get("score.weight", [None])[0] != 1:
            return None  # a classifier with several labels: not what the reward stage builds
    elif arch.endswith("ForCausalLM"):
        if tied:
            numel.pop("lm_head.weight", None)  # one tensor, counted once (as the built model does)
        elif "lm_head.weight" not in numel:
            return None
    else:
        return None  # a reward checkpoint trained as a policy: let the model builder decide
    modules: dict[str, int] = {}
    for name, n in numel.items():
        modules[name.rpartition(".")[0]] = modules.get(name.rpartition(".")[0], 0) + n
    if tied and model != "score":  # the tied head is a module of its own holding the embedding
        modules["lm_head"] = max(modules.get("lm_head", 0), numel.get("model.embed_tokens.weight", 0))
    params = sum(numel.values())
    trainable = params
    if lora is not None:
        r = int(lora["r"])
        trainable = sum(r * (shapes[k][0] + shapes[k][1]) for k in numel
                        if k.endswith(".weight") and k.rsplit(".", 2)[-2] in targets and len(shapes.get(k, ())) == 2)
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    # the Linear weights of the transformer blocks (2-D there; norms are 1-D): what QLoRA stores in 4 bits
    block_linear = sum(n for k, n in numel.items() if ".layers." in k and k.endswith(".weight") and len(shapes[k]) == 2)
    return {"architecture": arch, "params": params, "trainable": trainable,
            "largest_layer": max(modules.values(), default=0), "dtype": str(dtype), "block_linear": block_linear}
