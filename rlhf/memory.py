"""Per-process memory of a training job's model states, before launch: will it fit?

Model states are the weights, their gradients and the optimizer's state (Adam: two moments), as
the ZeRO paper counts them (Rajbhandari et al., 2020, section 3). Per trained parameter:

  weights in 16-bit (bf16/fp16): 2 bytes + 2 gradient + 12 optimizer (fp32 master copy 4, m 4, v 4)
  weights in fp32:               4 bytes + 4 gradient +  8 optimizer (m, v)

ZeRO stage 1 splits the optimizer state over the N processes, stage 2 the gradients too, stage 3
the weights too; offload moves the optimizer state (offload_optimizer) or the weights (offload_param,
stage 3) to host memory. A frozen reference model (a stage whose FACTS.reference holds: DPO, PPO,
GRPO, RLOO; without LoRA) adds its weights, split only under stage 3. Activations, temporary buffers and the CUDA context come on top
(activations grow with batch x length; DeepSpeed's own estimator adds a 1.5x buffer on the host
side). Where DeepSpeed's estimators apply (ZeRO-2/3, full fine-tuning) their figures are given
beside ours.

QLoRA (peft=qlora) stores the Linear layers of the transformer blocks in 4-bit NF4: half a byte per
weight plus its block constants (one fp32 absmax per 64 weights, 0.5 bit; with double quantisation
an 8-bit absmax per 64 and an fp32 constant per 256 blocks, 8/64 + 32/(64*256) = 0.127 bit: Dettmers
et al., 2023, QLoRA, section 3). Embeddings, norms and the output head stay unquantised and peft's
`prepare_model_for_kbit_training` casts them to float32; the adapters' gradients and Adam state are
counted as fp32 (TRL trains them in bf16 on a GPU: an overestimate of a small term).

The parameter count comes from the model's config alone: the model is built on the meta device
(no weights read, no memory used), so an 8B config is counted in a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import UserError

GIB = 2**30
# bytes per NF4 weight, by double quantisation: 4 bits + its share of the block constants (QLoRA, section 3)
NF4_BYTES = {True: (4 + 8 / 64 + 32 / (64 * 256)) / 8, False: (4 + 32 / 64) / 8}


@dataclass
class ModelSize:
    name: str
    architecture: str
    params: int           # distinct parameters (tied embeddings counted once)
    trainable: int        # what gets gradients and optimizer state (LoRA: the adapters only)
    largest_layer: int    # parameters of the largest single module (DeepSpeed's ZeRO-3 estimator uses it)
    weight_bytes: float   # bytes per stored weight (fp32 4, bf16/fp16 2); QLoRA: of the unquantised ones (4)
    quantized: int = 0    # weights stored in 4-bit NF4 (QLoRA: the blocks' Linear layers), each nf4_bytes
    nf4_bytes: float = 0.0  # bytes per 4-bit weight with its block constants (NF4_BYTES)


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


def model_size(source: str, model_cfg, peft_cfg, model: str) -> ModelSize:
    """Count the parameters of the `model` ("causal" or "score": the stage's FACTS.model) a stage builds from
    `source`, without reading weights: from a local checkpoint's safetensors headers where
    `rlhf.checkpoint_size` knows the architecture (milliseconds), else from the config (meta device)."""
    from .checkpoint_size import count

    lora = None
    if peft_cfg.method in ("lora", "qlora"):
        targets = peft_cfg.lora.target_modules
        targets = OmegaConf.to_container(targets, resolve=True) if OmegaConf.is_config(targets) else targets
        lora = {"r": int(peft_cfg.lora.r), "target_modules": targets}
    quick = count(source, model, lora, bool(model_cfg.trust_remote_code))
    if quick is not None:
        dtype = str(model_cfg.dtype)
        return ModelSize(name=str(model_cfg.name_or_path), architecture=quick["architecture"], params=quick["params"],
                         trainable=quick["trainable"], largest_layer=quick["largest_layer"],
                         weight_bytes=_weight_bytes(quick["dtype"] if dtype == "auto" else dtype, peft_cfg),
                         **_quantized(quick["block_linear"], peft_cfg))
    from .models import load_config

    config = load_config(model_cfg, source)
    return size_from_config(config, str(model_cfg.name_or_path), str(model_cfg.dtype), peft_cfg, model)


def size_from_config(config, name: str, dtype: str, peft_cfg, model: str) -> ModelSize:
    """The `model` ("causal", or "score": one score head) a stage would build from `config`, on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForCausalLM
    if model == "score":
        cls, config.num_labels = AutoModelForSequenceClassification, 1
    with torch.device("meta"):
        built = cls.from_config(config)
    params = {id(p): p.numel() for p in built.parameters()}  # data_ptr() is 0 on meta: dedupe by identity
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in built.modules()), default=0)
    trainable = _lora_params(built, peft_cfg) if peft_cfg.method in ("lora", "qlora") else sum(params.values())
    if dtype == "auto":
        dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    heads = {id(m) for m in (built.get_output_embeddings(), getattr(built, "score", None)) if m is not None}
    block_linear = sum(m.weight.numel() for m in built.modules() if isinstance(m, torch.nn.Linear) and id(m) not in heads)
    return ModelSize(name=name, architecture=type(built).__name__, params=sum(params.values()),
                     trainable=trainable, largest_layer=largest, weight_bytes=_weight_bytes(dtype, peft_cfg),
                     **_quantized(block_linear, peft_cfg))


def _weight_bytes(dtype: str, peft_cfg) -> float:
    """Bytes per unquantised weight: QLoRA's are float32 (prepare_model_for_kbit_training casts them)."""
    return 4.0 if peft_cfg.method == "qlora" or "32" in dtype else 2.0


def _quantized(block_linear: int, peft_cfg) -> dict[str, Any]:
    """ModelSize's 4-bit fields: the blocks' Linear weights under QLoRA (transformers keeps the
    output head and embeddings unquantised), else none."""
    if peft_cfg.method != "qlora":
        return {}
    quant = peft_cfg.get("quantization") or {}
    return {"quantized": int(block_linear), "nf4_bytes": NF4_BYTES[bool(quant.get("bnb_4bit_use_double_quant", False))]}


def weight_bytes_total(size: ModelSize) -> float:
    """Bytes of the stored weights: the 4-bit ones with their constants, the rest at weight_bytes."""
    return size.quantized * size.nf4_bytes + (size.params - size.quantized) * size.weight_bytes


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
    weights = weight_bytes_total(size) / (n if zero.stage == 3 else 1)
    grads = size.trainable * grad_b / (n if zero.stage >= 2 else 1)
    optimizer = size.trainable * opt_b / (n if zero.stage >= 1 else 1)
    ref = weight_bytes_total(size) / (n if zero.stage == 3 else 1) if reference else 0.0
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


def estimate(size: ModelSize, zero: ZeroSetup, world_size: int, with_reference: bool, peft_method: str,
             precompute_ref: bool = False, gpu_memory_bytes: int | None = None) -> dict[str, Any]:
    """The chosen setup, a grid over ZeRO stages x world sizes (same offload), and a fit verdict.
    `with_reference`: the stage holds a frozen reference beside the policy (its FACTS.reference); counted
    unless LoRA (the policy with its adapter disabled is the reference) or precomputed log-probs replace it."""
    reference = with_reference and peft_method == "none" and not precompute_ref
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
        f"{m['trainable'] / 1e6:,.2f}M trained, "
        + (f"{m['quantized'] / 1e6:,.2f}M weights in 4-bit NF4 ({m['nf4_bytes']:.3f} bytes each), the rest "
           if m.get("quantized") else "")
        + f"{m['weight_bytes']:g} bytes per weight"
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
