"""Inputs both sides of a benchmark share, built once into runs/bench/cache/ (not timed).

- Random-init Llamas of ~1M to ~51M parameters with the GPT-2 vocabulary of the shared assets
  (+ a `<pad>` token), so compute, not the tiny vocabulary of stories260k, dominates a step.
- Data files in the canonical schema: exactly the rows our data layer yields for a preset (read,
  converted, validated and split by `rlhf.data.load_splits` with the model's tokenizer), so ours
  (through `data=jsonl data.source=<file>`) and the plain-TRL peer train on the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import ASSETS, ROOT, write_jsonl

CACHE = ROOT / "runs" / "bench" / "cache"
STORIES = ASSETS / "models" / "stories260k"
# name -> (hidden, layers, heads, intermediate); tied embeddings; vocab 50,258.
LLAMAS = {
    "llama1m": (20, 2, 2, 56),
    "llama5m": (96, 2, 4, 256),
    "llama20m": (256, 8, 4, 688),
    "llama50m": (512, 8, 8, 1376),
}


def model_dir(name: str) -> Path:
    """stories260k (the embedded pretrained model) or a cached random-init Llama, built on first use."""
    if name == "stories260k":
        return STORIES
    path = CACHE / "models" / name
    if (path / "model.safetensors").is_file():
        return path
    import torch
    from transformers import GPT2TokenizerFast, LlamaConfig, LlamaForCausalLM

    tok = GPT2TokenizerFast.from_pretrained(ASSETS / "tokenizers" / "gpt2")
    tok.add_special_tokens({"pad_token": "<pad>"})
    hidden, layers, heads, inter = LLAMAS[name]
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    tmp = path.with_name(path.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(path)
    return path


def params(name: str) -> int:
    from rlhf.checkpoint_size import count

    return count(model_dir(name), "causal", None)["params"]


def model_overrides(name: str, max_length: int) -> list[str]:
    """Ours: the model preset a user would write for this model."""
    if name == "stories260k":
        return ["model=stories260k", f"model.max_length={max_length}"]
    return ["model=stories260k", f"model.name_or_path={model_dir(name)}", "model.add_bos=false",
            f"model.max_length={max_length}"]


def splits(model: str, data: str, max_length: int, stage: str, **data_overrides: Any):
    """Our train/eval rows of data preset `data` for `model`, as `rlhf stage=<stage> data=<data>` loads
    them (read, converted, validated and encoded by that stage's encoder)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rlhf.cli import register_resolvers
    from rlhf.data import load_splits
    from rlhf.models import load_tokenizer
    from rlhf.stages import stage_module
    from rlhf.stages.inputs import data_config

    register_resolvers()
    GlobalHydra.instance().clear()
    overrides = [f"stage={stage}", f"data={data}", *model_overrides(model, max_length)]
    overrides += [f"data.{k}={v}" for k, v in data_overrides.items()]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    GlobalHydra.instance().clear()
    tok = load_tokenizer(cfg.model)
    return load_splits(data_config(cfg.data), stage_module(stage).encoder(cfg, tok)), tok


def fits(rows: list[dict], tok, max_length: int, texts) -> list[dict]:
    """Rows whose every full text (plus BOS/EOS) fits max_length: then neither side truncates or drops."""
    out = []
    for row in rows:
        if max(len(tok(t, add_special_tokens=True).input_ids) for t in texts(row)) + 2 <= max_length:
            out.append(row)
    return out


def data_file(model: str, data: str, max_length: int, stage: str, split: str = "train", only_fitting: bool = False,
              **data_overrides: Any) -> Path:
    """A cached canonical .jsonl of our `split` rows (train or eval) of preset `data` for `model`."""
    key = "-".join([model, data, str(max_length), stage, split, "fit" if only_fitting else "all",
                    *(f"{k}{v}" for k, v in sorted(data_overrides.items()))])
    path = CACHE / "data" / f"{key}.jsonl"
    if path.is_file():
        return path
    sp, tok = splits(model, data, max_length, stage, **data_overrides)
    rows = sp.train if split == "train" else sp.eval
    if only_fitting:
        rows = fits(rows, tok, max_length, _full_texts)
    tmp = write_jsonl(path.with_suffix(".tmp"), rows)
    tmp.rename(path)
    return path


def _full_texts(row: dict) -> list[str]:
    if "chosen" in row:
        return [row["prompt"] + row["chosen"], row["prompt"] + row["rejected"]]
    if "responses" in row:
        return [row["prompt"] + r for r in row["responses"]]
    return [row["prompt"] + row["completion"]]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def split_file(path: Path, kind: str, eval_rows: int, max_length: int, model: str, stage: str):
    """(train, eval) rows that `rlhf stage=<stage> data=jsonl data.source=<path> data.eval_rows=<n>`
    trains and evaluates on: the same seeded content-hash split our data layer makes."""
    sp, _ = splits(model, "jsonl", max_length, stage, kind=kind, source=path, eval_rows=eval_rows)
    return sp.train, sp.eval


def expand_pairs(ranked: list[dict]) -> list[dict]:
    """Each ranked list as all its non-tied pairs {prompt, chosen, rejected} (rank 0 = best)."""
    out = []
    for row in ranked:
        resp, ranks = row["responses"], row["ranks"]
        for i in range(len(resp)):
            for j in range(len(resp)):
                if ranks[i] < ranks[j]:
                    out.append({"prompt": row["prompt"], "chosen": resp[i], "rejected": resp[j]})
    return out
