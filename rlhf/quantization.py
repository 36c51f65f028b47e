"""4-bit QLoRA through bitsandbytes: can it run here, its load config, and its saved artifact.

QLoRA (Dettmers et al., 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", section 3) stores
the frozen base in 4-bit NormalFloat (NF4) blocks of 64 weights, each block with its own absmax
constant (itself quantised to 8 bits with double quantisation), computes in a 16/32-bit dtype, and
trains LoRA adapters beside it. bitsandbytes >= 0.48 carries CPU kernels as well as CUDA ones, so
whether `peft=qlora` can run is decided by trying it on this machine's device
(`qlora_problem`), not by the presence of a GPU.

Saving: a 4-bit base cannot take the adapter's update without re-quantising it (peft's
`merge_and_unload` on a `Linear4bit` dequantises, adds, and rounds back to NF4). peft's documented
way for QLoRA is to load the base in full precision, load the adapter on it and merge there
(`rlhf.models.merged_full_precision`): the run directory then holds the adapter (for the 4-bit base) and a merged
full-precision model any stage, `transformers` or vLLM loads without bitsandbytes.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

log = logging.getLogger(__name__)

TESTED_BNB = "0.50.2"  # the version the QLoRA tests ran with (pyproject extra `qlora`)
INSTALL_HINT = f'pip install "rlhf-align[qlora]" (bitsandbytes=={TESTED_BNB})'


@functools.cache
def qlora_problem(device: str | None = None) -> str | None:
    """Why 4-bit NF4 cannot run on `device` (default: cuda if visible, else cpu), or None if it can.

    Decided by trying, once per process: bitsandbytes imports, and one NF4 `Linear4bit` layer
    (64 -> 64, compute float32) quantises on `device` and its forward pass matches the dense layer
    it was quantised from within NF4's rounding (relative error < 0.25). Costs the import (~2 s)
    and a few milliseconds.
    """
    if importlib.util.find_spec("bitsandbytes") is None:
        return f"bitsandbytes is not installed: {INSTALL_HINT}"
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        import bitsandbytes as bnb
    except Exception as e:  # a build whose native library does not load here
        return f"bitsandbytes does not import ({type(e).__name__}: {_first_line(e)}): {INSTALL_HINT}"
    try:
        gen = torch.Generator().manual_seed(0)
        dense = torch.randn(64, 64, generator=gen) / 8
        layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(dense, requires_grad=False, quant_type="nf4")
        layer = layer.to(device)
        x = torch.randn(4, 64, generator=gen)
        with torch.no_grad():
            got, want = layer(x.to(device)).float().cpu(), x @ dense.T
        err = float((got - want).norm() / want.norm())
    except Exception as e:  # any failure of the kernels here means: not on this device
        return (f"bitsandbytes {bnb.__version__} cannot run a 4-bit layer on {device} "
                f"({type(e).__name__}: {_first_line(e)}); install a build with kernels for it: {INSTALL_HINT}")
    if not err < 0.25:  # NF4 of a Gaussian layer: ~0.1 relative error
        return (f"bitsandbytes {bnb.__version__} gives a 4-bit layer on {device} that does not match its "
                f"dense weights (relative error {err:.2f}); install {INSTALL_HINT}")
    return None


def zero3_problem(quantization: dict, zero_stage: int | None, model_dtype: str | None) -> str | None:
    """Why `peft=qlora` cannot run under this DeepSpeed ZeRO stage, or None.

    ZeRO-3 partitions every parameter, the 4-bit ones included: bitsandbytes' packed `Params4bit`
    survive that only when stored in the model's float dtype (`bnb_4bit_quant_storage`, as PEFT's
    "QLoRA and DeepSpeed with ZeRO3" recipe sets it), and only DeepSpeed's GPU path handles them
    (DeepSpeed issue 5660: zero.Init with bitsandbytes). Measured on CPU without this refusal
    (stories260k SFT, debug=smoke): the 4 steps train, then saving fails, the gathered state dict
    holding packed [2048, 1] weights where the merge expects [64, 64]. ZeRO-1/2 shard optimizer
    state and gradients only, which the frozen 4-bit base has none of: they work wherever QLoRA does."""
    if zero_stage != 3:
        return None
    import torch

    if not torch.cuda.is_available():
        return ("peft=qlora with deepspeed ZeRO-3: ZeRO-3 partitions bitsandbytes' packed 4-bit weights, and the "
                "checkpoint it gathers holds them packed (uint8 blocks of shape [n, 1]), which cannot be merged into "
                "the published model; the supported recipe (PEFT's QLoRA + ZeRO-3, bnb_4bit_quant_storage set to the "
                "model dtype) is GPU-only. On CPU use deepspeed=zero2 (the frozen 4-bit base has no optimizer state "
                "to shard) or peft=lora")
    storage = quantization.get("bnb_4bit_quant_storage")
    if storage in (None, "uint8"):
        want = model_dtype if model_dtype not in (None, "auto") else "bfloat16"
        return ("peft=qlora with deepspeed ZeRO-3: set peft.quantization.bnb_4bit_quant_storage to the model's "
                f"dtype (e.g. +peft.quantization.bnb_4bit_quant_storage={want}) so ZeRO-3 can partition the "
                "packed 4-bit weights (PEFT's QLoRA + ZeRO-3 recipe), or use deepspeed=zero2")
    return None


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0][:200]


def compute_dtype(name: str | None, model_dtype: str | None):
    """The torch dtype 4-bit layers compute in: `name`, or for `auto`/null the model's own dtype
    (`model.dtype`), and where that is `auto` too, bfloat16 on CUDA and float32 on a CPU."""
    import torch

    for candidate in (name, model_dtype):
        if candidate not in (None, "auto"):
            return getattr(torch, str(candidate))
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def is_4bit(model) -> bool:
    """A (PEFT-wrapped) model whose base was loaded in 4 bits."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False))


def layer_dtype(model):
    """The torch dtype a 4-bit model's layers compute in (its `bnb_4bit_compute_dtype`)."""
    import torch

    quant = model.get_base_model().config.quantization_config if hasattr(model, "get_base_model") \
        else model.config.quantization_config
    dtype = quant.get("bnb_4bit_compute_dtype") if isinstance(quant, dict) else quant.bnb_4bit_compute_dtype
    return getattr(torch, dtype) if isinstance(dtype, str) else (dtype or torch.float32)


def adapters_in_compute_dtype(model) -> None:
    """Give a 4-bit model's trainable parameters (LoRA adapters, a score head) the 4-bit layers'
    compute dtype where that is float32.

    TRL's trainers cast a quantised model's trainable parameters to bfloat16 (the QLoRA paper's
    choice, section 3, for GPUs computing in bf16). Where the layers compute in float32 (a CPU: bf16
    matmuls are slow there and lose precision), that leaves bf16 adapters between float32
    activations, and a bf16 score head that float32 hidden states cannot pass through outside
    TRL's loop; so they go back to float32, before the optimizer is built."""
    import torch

    if not is_4bit(model) or layer_dtype(model) != torch.float32:
        return
    for p in model.parameters():
        if p.requires_grad and p.dtype == torch.bfloat16:
            p.data = p.data.float()
