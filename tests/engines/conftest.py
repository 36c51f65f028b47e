"""A random-init Llama of head dimension 64 with the GPT-2 tokenizer (vLLM's CPU attention refuses
stories260k's head dimension 8), saved once per session, and one vLLM engine per test module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process (colocated)

# A small Llama vLLM's CPU backend takes: hidden 256 / 4 heads = head dim 64, 2 layers.
LLAMA64 = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=False)
# 256 MiB of KV cache: the CPU default would take 90% of RAM
VLLM_SETTINGS = {"backend": "vllm", "vllm": {"gpu_memory_utilization": 0.3, "kv_cache_memory_bytes": 256 << 20,
                                             "max_model_len": 256, "tensor_parallel_size": 1,
                                             "enable_sleep_mode": False, "enforce_eager": True}}
# The same engine through the config (generation=vllm), and the model as a config names it.
VLLM_OVERRIDES = ["generation=vllm", f"generation.vllm.kv_cache_memory_bytes={256 << 20}", "generation.vllm.max_model_len=256"]


def build_llama64(out: Path, assets: Path, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2TokenizerFast, LlamaConfig, LlamaForCausalLM

    tok = GPT2TokenizerFast.from_pretrained(assets / "tokenizers" / "gpt2")
    tok.add_special_tokens({"pad_token": "<pad>"})
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **LLAMA64)
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():  # a sharper distribution than random init's near-uniform one: samples end, lengths vary
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def llama64(tmp_path_factory, assets) -> Path:
    return build_llama64(tmp_path_factory.mktemp("llama64"), assets)
