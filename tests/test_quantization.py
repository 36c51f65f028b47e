"""rlhf.quantization and the QLoRA side of rlhf.memory: what `rlhf check` estimates for a 4-bit
base is what bitsandbytes holds once the model is loaded."""

from __future__ import annotations

import pytest
import torch


def test_qlora_weight_memory_is_what_the_loaded_4bit_model_holds(compose):
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from rlhf.memory import (
        ZeroSetup,
        estimate,
        format_estimate,
        model_size,
        per_process,
        size_from_config,
        weight_bytes_total,
    )
    from rlhf.models import load_config

    cfg = compose("peft=qlora")
    src = str(cfg.model.name_or_path)
    size = model_size(src, cfg.model, cfg.peft, "sft")  # from the safetensors headers
    built = size_from_config(load_config(cfg.model, src), "m", "float32", cfg.peft, "sft")  # on the meta device
    assert size.quantized == built.quantized == 226_560 and size.weight_bytes == 4.0  # 5 blocks' projections

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=q)
    held = sum(p.numel() * p.element_size() for p in model.parameters())  # packed NF4 (uint8) + fp32 rest
    for m in model.modules():  # + the block constants: 8-bit absmax per 64 weights, fp32 per 256 blocks
        if isinstance(m, bnb.nn.Linear4bit):
            qs = m.weight.quant_state
            held += qs.absmax.numel() * qs.absmax.element_size() + qs.state2.absmax.numel() * 4
    assert weight_bytes_total(size) == pytest.approx(held, rel=0.01)
    full = model_size(src, cfg.model, compose().peft, "sft")
    assert weight_bytes_total(full) / weight_bytes_total(size) > 4  # fp32 260k -> mostly 4-bit
    chosen = per_process(size, ZeroSetup(0, False, False), 1, reference=False)
    assert chosen["gpu"]["params"] == int(weight_bytes_total(size))
    assert chosen["gpu"]["grads"] == 4 * size.trainable and chosen["gpu"]["optimizer"] == 8 * size.trainable
    text = format_estimate(estimate(size, ZeroSetup(0, False, False), 1, "sft", "qlora"))
    assert "0.23M weights in 4-bit NF4 (0.516 bytes each)" in text
