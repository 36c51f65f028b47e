"""The full weights a generation engine takes from a policy: in the HF checkpoint's names, LoRA deltas
merged in, and under DeepSpeed ZeRO-3 gathered from their shards once per sync, one module at a time.

`full_weights(model)` walks the model's modules in order. Each module's own parameters (a LoRA layer:
its base layer and adapters together) are gathered with `deepspeed.zero.GatheredParameters` while
ZeRO-3 partitions them, copied out whole (merged: W + scale * B A for every active adapter), and
released before the next module is gathered, so no rank holds more than one module beyond its shard
while the engine loads (the pattern of TRL's `_move_model_to_vllm` for ZeRO-3 and OpenRLHF's
`_broadcast_to_vllm`, which gathers one parameter at a time). Under ZeRO-3 the walk is collective:
every rank must run it, in the same order. Without ZeRO-3 nothing is gathered or copied.

`gathers` counts the `GatheredParameters` blocks of this process (each module's parameters once per
sync): tests and the bench read it to show that a sync gathers each module once, and that sampling
with the engine gathers nothing (HF `generate` under ZeRO-3 gathers every layer for every token).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .. import distributed

gathers = 0  # GatheredParameters blocks entered by full_weights in this process


def base_model(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def _whole(params: list, partitioned: bool):
    """`params` whole for the block (every rank gathers them together under ZeRO-3)."""
    global gathers
    if not partitioned or not params:
        yield
        return
    import deepspeed

    gathers += 1
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def _lora_class():
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return ()
    return LoraLayer


def _merged(module, weight: torch.Tensor) -> torch.Tensor:
    """A LoRA layer's base weight with each active adapter's delta added (itself while disabled/merged)."""
    if module.disable_adapters or module.merged:
        return weight
    for a in module.active_adapters:
        if a in module.lora_A:
            weight = weight + module.get_delta_weight(a).to(weight.dtype)
    return weight


def _hf_name(name: str) -> str:
    return name.replace(".base_layer.", ".").replace(".original_module.", ".")


@torch.no_grad()
def full_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every entry of the HF checkpoint of `model` (a PEFT model: its base model's
    names, the active LoRA deltas merged in; none while its adapter is disabled). Shapes are the full
    parameters' whatever ZeRO-3 holds on this rank. Tensors are copies under ZeRO-3 (the gathered
    storage is released when the module's block ends), the model's own tensors otherwise."""
    base = base_model(model)
    partitioned = distributed.is_partitioned(base)
    keys = set(base.state_dict(keep_vars=True))  # names only (ZeRO-3 placeholders are empty)
    lora = _lora_class() if base is not model else ()
    shared = {}  # id -> count: tied parameters (an embedding and its LM head) are gathered once
    for _, p in base.named_parameters(remove_duplicate=False):
        shared[id(p)] = shared.get(id(p), 0) + 1
    kept: dict[int, torch.Tensor] = {}  # copies of tied parameters, for their second name
    done: list[str] = []  # LoRA layers: their children were handled with them
    for name, module in base.named_modules():
        if any(name.startswith(d) for d in done) or ".modules_to_save." in f".{name}.":
            continue
        prefix = f"{name}." if name else ""
        if lora and isinstance(module, lora):
            done.append(prefix)
            base_layer = module.get_base_layer()
            with _whole(list(module.parameters()), partitioned):
                for pname, p in base_layer.named_parameters(recurse=False):
                    t = _merged(module, p.detach()) if pname == "weight" else p.detach()
                    yield _hf_name(f"{prefix}base_layer.{pname}"), t.clone() if partitioned else t
            continue
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if id(p) not in kept]
        with _whole([p for _, p in own], partitioned):
            for pname, p in own:
                t = p.detach().clone() if partitioned else p.detach()
                if shared[id(p)] > 1:
                    kept[id(p)] = t
                if f"{prefix}{pname}" in keys:
                    yield _hf_name(f"{prefix}{pname}"), t
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in kept and all(n != pname for n, _ in own) and f"{prefix}{pname}" in keys:
                yield _hf_name(f"{prefix}{pname}"), kept[id(p)]
        for bname, b in module.named_buffers(recurse=False):
            if f"{prefix}{bname}" in keys:
                yield _hf_name(f"{prefix}{bname}"), b.detach()


def version(model) -> tuple:
    """Changes whenever a parameter is updated in place (optimizer step, load_state_dict) or a PEFT
    adapter is switched on or off: a tensor's `_version` counts its in-place writes. Under ZeRO-3 a
    parameter's own data is an empty placeholder between gathers and DeepSpeed writes the stepped
    values into its shard (`ds_tensor`) through `.data`, which counts no write: there the shard's
    sum (float64, this rank's part only, no gather) stands for its content."""
    adapters = tuple(bool(getattr(m, "disable_adapters", False)) for m in model.modules() if hasattr(m, "lora_A"))
    return tuple(_stamp(p) for p in model.parameters()), adapters


def _stamp(p) -> int | float:
    shard = getattr(p, "ds_tensor", None)
    return p._version if shard is None else float(shard.detach().double().sum())
