"""Per-process model-state memory (what `rlhf check` reports) for the model presets, offline.

stories260k is counted from its config in the embedded assets; Qwen2.5-0.5B-Instruct and
Meta-Llama-3-8B-Instruct from the shapes in their published config.json (the Hub is not needed).
Full fine-tuning with Adam; DPO adds a frozen reference copy. DeepSpeed's own estimator is shown
for ZeRO-2/3 (it counts no reference model and adds fp32 gradient buffers).

    .venv/bin/python bench/memory_estimate.py
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from rlhf.memory import GIB, ZeroSetup, deepspeed_estimate, per_process, size_from_config

ASSETS = Path(os.environ.get("RLHF_ASSETS_DIR", Path(__file__).resolve().parents[2] / "shared" / "assets"))


def configs():
    from transformers import AutoConfig, LlamaConfig, Qwen2Config

    yield "stories260k", "float32", AutoConfig.from_pretrained(ASSETS / "models" / "stories260k")
    # Qwen/Qwen2.5-0.5B-Instruct config.json
    yield "qwen2.5-0.5b", "bfloat16", Qwen2Config(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768)
    # meta-llama/Meta-Llama-3-8B-Instruct config.json
    yield "llama3-8b", "bfloat16", LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, max_position_embeddings=8192)


def fmt(b: float) -> str:
    return f"{b / GIB:.3f}" if b >= GIB / 100 else f"{b / 2**20:.2f} MiB"


def main() -> None:
    none = OmegaConf.create({"method": "none"})
    print("GiB per process, model states only (weights + gradients + Adam state); activations excluded")
    print(f"{'model':<14}{'params':>10} {'stage':<5}{'ZeRO':>6}{'ranks':>6}{'ours':>12}{'deepspeed':>12}")
    for name, dtype, config in configs():
        for stage in ("sft", "dpo"):
            size = size_from_config(config, name, dtype, none, "causal")  # both build a causal LM
            for zero in (2, 3):
                for n in (1, 2, 8):
                    setup = ZeroSetup(zero, False, False)
                    ours = per_process(size, setup, n, reference=stage == "dpo")["gpu_bytes"]
                    ds = deepspeed_estimate(size, setup, n)
                    print(f"{name:<14}{size.params / 1e6:>9.2f}M {stage:<5}{zero:>6}{n:>6}{fmt(ours):>12}"
                          f"{fmt(ds['gpu_bytes']) if ds else '-':>12}")


if __name__ == "__main__":
    main()
