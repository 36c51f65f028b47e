"""TRL's own vLLM path for GRPO / RLOO (`use_vllm=True, vllm_mode="colocate"`), driven by the one
`generation.vllm` node, so the engine settings are named once for every stage.

What `generation=vllm` does for stage=grpo / rloo:

- `trl_args(node)`: TRL config keyword arguments: `use_vllm`, `vllm_mode=colocate`, the memory share,
  tensor-parallel size, sleep mode, max model length, and (GRPO) TRL's importance-sampling correction
  on (`vllm_importance_sampling_correction`, its `sampling/*` metrics then appear in our logs; TRL
  1.16's RLOO has none).
- `patched(policy, node)` (a context manager around building and training the trainer):
  * every `LLM(...)` TRL builds gets the policy's dtype (TRL passes none, so vLLM's `dtype="auto"`
    would sample a float32 policy in bf16: `sampling/sampling_logp_difference` max 9e-3 instead of
    2e-6) and `generation.vllm.kv_cache_memory_bytes` when set (TRL has no such knob);
  * on vLLM's CPU backend only: TRL 1.16's colocated weight sync (`load_weights` on the model runner)
    fails there (`'Parameter' object has no attribute 'weight_loader'`: the CPU backend repacks linear
    weights), so `VLLMGeneration.sync_weights` is replaced by vLLM's `reload_weights` worker method on
    the same named parameters TRL gathers (merged LoRA weights included). On GPUs TRL's own sync runs.
  Both patches are undone when the block ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping


def trl_args(node: Mapping, config_cls: type) -> dict:
    """GRPOConfig / RLOOConfig keyword arguments for the colocated engine `generation.vllm` describes
    (those `config_cls` has: TRL 1.16's RLOO has no importance-sampling correction)."""
    import dataclasses

    v = dict(node.get("vllm") or {})
    out = {"use_vllm": True, "vllm_mode": "colocate", "vllm_importance_sampling_correction": True,
           "vllm_gpu_memory_utilization": v.get("gpu_memory_utilization", 0.3),
           "vllm_tensor_parallel_size": v.get("tensor_parallel_size", 1),
           "vllm_enable_sleep_mode": bool(v.get("enable_sleep_mode", False))}
    if v.get("max_model_len") is not None:
        out["vllm_max_model_length"] = int(v["max_model_len"])
    fields = {f.name for f in dataclasses.fields(config_cls)}
    return {k: val for k, val in out.items() if k in fields}


def _reload_sync(self) -> None:
    """`VLLMGeneration.sync_weights` for vLLM's CPU backend: the weights TRL gathers (copied: TRL unmerges
    LoRA adapters in place after the walk), loaded by vLLM's `reload_weights`."""
    if self.mode != "colocate":
        return _ORIGINAL["sync_weights"](self)
    weights = [(name, param.detach().clone()) for name, param in self._iter_named_params()]
    self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
    self.llm.reset_prefix_cache()


_ORIGINAL: dict = {}


@contextlib.contextmanager
def patched(policy, node: Mapping) -> Iterator[None]:
    """TRL's vLLM glue given the policy's dtype and KV-cache size, and (CPU backend) a working weight sync."""
    import os

    import torch
    from trl.generation import vllm_generation as vg

    from .versions import require_tested

    require_tested()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # colocated: the engine in this process
    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    dtype = str(next(base.parameters()).dtype).removeprefix("torch.")
    kv = (node.get("vllm") or {}).get("kv_cache_memory_bytes")
    llm_cls = vg.LLM

    def llm(*args, **kwargs):
        kwargs["dtype"] = dtype
        if kv is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv)
        return llm_cls(*args, **kwargs)

    _ORIGINAL["sync_weights"] = vg.VLLMGeneration.sync_weights
    vg.LLM = llm
    cpu = not torch.cuda.is_available()
    if cpu:
        vg.VLLMGeneration.sync_weights = _reload_sync
    try:
        yield
    finally:
        vg.LLM = llm_cls
        vg.VLLMGeneration.sync_weights = _ORIGINAL["sync_weights"]
