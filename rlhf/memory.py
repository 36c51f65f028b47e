"""Per-process memory of a training job's model states, before launch: will it fit?

Model states are the weights, their gradients and the optimizer's state (Adam: two moments), as
the ZeRO paper counts them (Rajbhandari et al., 2020, section 3). Per trained parameter:

  weights in 16-bit (bf16/fp16): 2 bytes + 2 gradient + 12 optimizer (fp32 master copy 4, m 4, v 4)
  weights in fp32:               4 bytes + 4 gradient +  8 optimizer (m, v)

ZeRO stage 1 splits the optimizer state over the N processes, stage 2 the gradients too, stage 3
the weights too; offload moves the optimizer state (offload_optimizer) or the weights (offload_param,
stage 3) to host memory. A frozen reference model (DPO, PPO, GRPO, RLOO without LoRA) adds its
weights, split only under stage 3. Activations, temporary buffers and the CUDA context come on top
(activations grow with batch x length; DeepSpeed's own estimator adds a 1.5x buffer on the host
side). Where DeepSpeed's estimators apply (ZeRO-2/3, full fine-tuning) their figures are given
beside ours.

The parameter count comes from the model's config alone: the model is built on the meta device
(no weights read, no memory used), so an 8B config is counted in a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import UserError

STAGES_WITH_REFERENCE = ("dpo", "kto", "ppo", "grpo", "rloo")
GIB = 2**30


@dataclass
class ModelSize:
    name: str
    architecture: str
    params: int           # distinct parameters (tied embeddings counted once)
    trainable: int        # what gets gradients and optimizer state (LoRA: the adapters only)
    largest_layer: int    # parameters of the largest single module (DeepSpeed's ZeRO-3 estimator uses it)
    weight_bytes: float   # bytes per stored weight (fp32 4, bf16/fp16 2, 4-bit QLoRA 0.5)


@dataclass
class ZeroSetup:
    stage: int            # 0 = no ZeRO (plain data parallel)
    offload_optimizer: bool
    offload_param: bool

    def describe(self) -> str:
        off = [n for n, on in (("optimizer", self.offload_optimizer), ("params", self.offload_param)) if on]
        return (f"ZeRO-{self.stage}" if self.stage else "no ZeRO") + (f", {'+'.join(off)} offloaded to CPU" if off else "")


def zero_setup(ds_cfg: Any) -> ZeroSetup:
    """ZeRO stage and offload from the root `deepspeed:` node (a DeepSpeed config; null = no ZeRO).

    Accepts the DeepSpeed JSON layout either at the node itself or under its `config:` key."""
    if ds_cfg is None:
        return ZeroSetup(0, False, False)
    ds = OmegaConf.to_container(ds_cfg, resolve=True) if isinstance(ds_cfg, DictConfig) else dict(ds_cfg)
    if "zero_optimization" not in ds and isinstance(ds.get("config"), dict):
        ds = ds["config"]
    zero = ds.get("zero_optimization") or {}
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise UserError(f"deepspeed.zero_optimization.stage: {stage!r} is not one of 0, 1, 2, 3")

    def offloaded(key: str) -> bool:
        return str((zero.get(key) or {}).get("device", "none")).lower() in ("cpu", "nvme")

    return ZeroSetup(int(stage), offloaded("offload_optimizer"), offloaded("offload_param") and stage == 3)


def model_size(source: str, model_cfg, peft_cfg, stage_name: str) -> ModelSize:
    """Count parameters without reading weights: from a local checkpoint's safetensors headers where
    `rlhf.checkpoint_size` knows the architecture (milliseconds), else from the config (meta device)."""
    from .checkpoint_size import count

    lora = None
    if peft_cfg.method in ("lora", "qlora"):
        targets = peft_cfg.lora.target_modules
        targets = OmegaConf.to_container(targets, resolve=True) if OmegaConf.is_config(targets) else targets
        lora = {"r": int(peft_cfg.lora.r), "target_modules": targets}
    quick = count(source, stage_name, lora, bool(model_cfg.trust_remote_code))
    if quick is not None:
        dtype = str(model_cfg.dtype)
        return ModelSize(name=str(model_cfg.name_or_path), architecture=quick["architecture"], params=quick["params"],
                         trainable=quick["trainable"], largest_layer=quick["largest_layer"],
                         weight_bytes=_weight_bytes(quick["dtype"] if dtype == "auto" else dtype, peft_cfg))
    from .models import load_config

    config = load_config(model_cfg, source)
    return size_from_config(config, str(model_cfg.name_or_path), str(model_cfg.dtype), peft_cfg, stage_name)


def size_from_config(config, name: str, dtype: str, peft_cfg, stage_name: str) -> ModelSize:
    """The model a stage would build from `config` (a reward model: one score head), on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForCausalLM
    if stage_name == "reward":
        cls, config.num_labels = AutoModelForSequenceClassification, 1
    with torch.device("meta"):
        model = cls.from_config(config)
    params = {id(p): p.numel() for p in model.parameters()}  # data_ptr() is 0 on meta: dedupe by identity
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)
    trainable = _lora_params(model, peft_cfg) if peft_cfg.method in ("lora", "qlora") else sum(params.values())
    if dtype == "auto":
        dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    return ModelSize(name=name, architecture=type(model).__name__, params=sum(params.values()),
                     trainable=trainable, largest_layer=largest, weight_bytes=_weight_bytes(dtype, peft_cfg))


def _weight_bytes(dtype: str, peft_cfg) -> float:
    return 0.5 if peft_cfg.method == "qlora" else (4.0 if "32" in dtype else 2.0)


def _lora_params(model, peft_cfg) -> int:
    """r x (in + out) per adapted Linear: what peft adds and trains."""
    import torch

    targets = set(OmegaConf.to_container(peft_cfg.lora.target_modules, resolve=True))
    r = int(peft_cfg.lora.r)
    return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets)


def per_process(size: ModelSize, zero: ZeroSetup, world_size: int, reference: bool) -> dict[str, Any]:
    """Bytes per process on the GPU and in host memory, by kind (the ZeRO paper's accounting)."""
    n = max(1, int(world_size))
    full_precision = size.weight_bytes >= 4
    grad_b, opt_b = (4.0, 8.0) if full_precision else (2.0, 12.0)
    weights = size.params * size.weight_bytes / (n if zero.stage == 3 else 1)
    grads = size.trainable * grad_b / (n if zero.stage >= 2 else 1)
    optimizer = size.trainable * opt_b / (n if zero.stage >= 1 else 1)
    ref = size.params * size.weight_bytes / (n if zero.stage == 3 else 1) if reference else 0.0
    gpu = {"params": weights, "grads": grads, "optimizer": optimizer, "reference": ref}
    cpu = {}
    if zero.offload_optimizer:
        cpu["optimizer"] = gpu.pop("optimizer")
    if zero.offload_param:
        cpu["params"] = gpu.pop("params")
        cpu["reference"] = gpu.pop("reference")
    return {"stage": zero.stage, "world_size": n, "offload_optimizer": zero.offload_optimizer,
            "offload_param": zero.offload_param,
            "gpu_bytes": int(sum(gpu.values())), "cpu_bytes": int(sum(cpu.values())),
            "gpu": {k: int(v) for k, v in gpu.items()}, "cpu": {k: int(v) for k, v in cpu.items()}}


def deepspeed_estimate(size: ModelSize, zero: ZeroSetup, world_size: int) -> dict[str, int] | None:
    """DeepSpeed's own estimators (ZeRO-2/3, full fine-tuning, mixed precision): GPU bytes per
    process, host bytes per node (with its 1.5x buffer). None where they do not apply."""
    if zero.stage not in (2, 3) or size.trainable != size.params:
        return None
    try:
        if zero.stage == 2:
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

            cpu, gpu = estimate_zero2_model_states_mem_needs(
                size.params, num_gpus_per_node=world_size, num_nodes=1, cpu_offload=zero.offload_optimizer)
        else:
            from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

            cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
                size.params, size.largest_layer, num_gpus_per_node=world_size, num_nodes=1,
                cpu_offload=zero.offload_optimizer, cpu_offload_params=zero.offload_param)
    except ImportError:
        return None
    return {"gpu_bytes": int(gpu), "cpu_bytes_per_node": int(cpu)}


def estimate(size: ModelSize, zero: ZeroSetup, world_size: int, stage_name: str, peft_method: str,
             precompute_ref: bool = False, gpu_memory_bytes: int | None = None) -> dict[str, Any]:
    """The chosen setup, a grid over ZeRO stages x world sizes (same offload), and a fit verdict."""
    reference = stage_name in STAGES_WITH_REFERENCE and peft_method == "none" and not precompute_ref
    chosen = per_process(size, zero, world_size, reference)
    chosen["deepspeed"] = deepspeed_estimate(size, zero, world_size)
    sizes = sorted({1, 2, 8, int(world_size)})
    grid = [per_process(size, ZeroSetup(s, zero.offload_optimizer and s >= 1, zero.offload_param and s == 3), n,
                        reference) for n in sizes for s in (0, 1, 2, 3)]
    out = {"model": asdict(size), "setup": zero.describe(), "world_size": int(world_size),
           "reference_model": reference, "chosen": chosen, "grid": grid,
           "gpu_memory_bytes": gpu_memory_bytes,
           "fits": None if gpu_memory_bytes is None else chosen["gpu_bytes"] < gpu_memory_bytes,
           "excluded": "activations, temporary buffers, CUDA context"}
    return out


def _fmt(b: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= scale:
            return f"{b / scale:.2f} {unit}"
    return f"{int(b)} B"


def format_estimate(est: dict[str, Any]) -> str:
    m, c = est["model"], est["chosen"]
    lines = [
        "memory preflight (model states per process: weights, gradients, Adam state; "
        f"{est['excluded']} come on top):",
        f"  {m['name']}: {m['architecture']}, {m['params'] / 1e6:,.2f}M params, "
        f"{m['trainable'] / 1e6:,.2f}M trained, {m['weight_bytes']:g} bytes per weight"
        + (", + a frozen reference copy" if est["reference_model"] else ""),
        f"  chosen: {est['setup']}, {est['world_size']} process{'es' if est['world_size'] > 1 else ''}: "
        f"{_fmt(c['gpu_bytes'])} per GPU (" + ", ".join(f"{k} {_fmt(v)}" for k, v in c["gpu"].items() if v)
        + ")" + (f" + {_fmt(c['cpu_bytes'])} host memory per process" if c["cpu_bytes"] else ""),
    ]
    if c.get("deepspeed"):
        d = c["deepspeed"]
        lines.append(f"  DeepSpeed's estimator for the same: {_fmt(d['gpu_bytes'])} per GPU, "
                     f"{_fmt(d['cpu_bytes_per_node'])} host memory per node")
    if est["fits"] is not None:
        verdict = "fits in" if est["fits"] else "does NOT fit in"
        lines.append(f"  {verdict} {_fmt(est['gpu_memory_bytes'])} per GPU (before activations)"
                     + ("" if est["fits"] else ": more processes, a higher ZeRO stage, offload or peft=lora"))
    stages = (0, 1, 2, 3)
    lines.append("  GPU per process    " + "".join(f"{('ZeRO-' + str(s)) if s else 'no ZeRO':>12}" for s in stages))
    for n in sorted({g["world_size"] for g in est["grid"]}):
        row = {g["stage"]: g["gpu_bytes"] for g in est["grid"] if g["world_size"] == n}
        lines.append(f"  {n:>4} process{'es' if n > 1 else '  '}     " + "".join(f"{_fmt(row[s]):>12}" for s in stages))
    return "\n".join(lines)
