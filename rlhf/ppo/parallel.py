"""The rank and engine plumbing of our PPO, on top of `rlhf.distributed`: one DeepSpeed engine for
policy + value, frozen models as ZeRO-3 inference engines, gradient and statistics averaging.

Data parallelism: each rank rolls out its own `rollout_batch_size` prompts; the gradients are
averaged (by the DeepSpeed engine, or `average_gradients` without one); every statistic, the KL the
controller sees included, is averaged over ranks (`mean_over_ranks`), so every rank keeps the same β.
"""

from __future__ import annotations

import copy

import torch

from .. import distributed
from .config import PPOConfig


class PolicyAndValue(torch.nn.Module):
    """The two trained models as one module: one DeepSpeed engine (one optimizer, one ZeRO
    partitioning) owns both."""

    def __init__(self, policy, value):
        super().__init__()
        self.policy, self.value = policy, value


def world() -> tuple[int, int]:
    """(rank, world size) of the process group, (0, 1) without one."""
    if distributed.world_size() > 1 and distributed._initialized():
        import torch.distributed as dist

        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def fill_deepspeed_config(ds: dict, config: PPOConfig, world_size: int, hidden_size: int) -> dict:
    """Our PPO's values for the "auto" entries of a conf/deepspeed config (as HF's Trainer fills them)."""
    ds = copy.deepcopy(ds)
    micro = config.mini_batch_size // config.gradient_accumulation_steps
    fixed = {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": config.gradient_accumulation_steps,
             "train_batch_size": micro * config.gradient_accumulation_steps * world_size,
             "gradient_clipping": config.max_grad_norm}
    for k, v in fixed.items():
        if ds.get(k, "auto") == "auto":
            ds[k] = v
    for prec in ("bf16", "fp16"):  # our PPO trains in the model's dtype
        if isinstance(ds.get(prec), dict) and ds[prec].get("enabled") == "auto":
            ds[prec]["enabled"] = False
    zero = ds.get("zero_optimization", {})
    for k, v in {"reduce_bucket_size": hidden_size * hidden_size,
                 "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
                 "stage3_param_persistence_threshold": 10 * hidden_size}.items():
        if zero.get(k) == "auto":
            zero[k] = v
    opt = ds.get("optimizer", {}).get("params", {})
    for k, v in {"lr": config.learning_rate, "betas": [0.9, 0.999], "eps": 1e-8,
                 "weight_decay": config.weight_decay}.items():
        if opt.get(k) == "auto":
            opt[k] = v
    return ds


def engine_for(policy, value, params: list[dict], config: PPOConfig, ds: dict, world_size: int):
    """(engine, optimizer, zero3) for policy + value under the DeepSpeed config `ds`."""
    import deepspeed

    hidden = int(getattr(policy.config, "hidden_size", 0) or 1024)
    ds = fill_deepspeed_config(ds, config, world_size, hidden)
    both = PolicyAndValue(policy, value)
    if "optimizer" in ds:  # DeepSpeed's own optimizer (e.g. CPU Adam for offload)
        engine, optimizer, _, _ = deepspeed.initialize(model=both, model_parameters=params, config=ds)
    else:
        opt = torch.optim.AdamW(params, weight_decay=config.weight_decay)
        engine, optimizer, _, _ = deepspeed.initialize(model=both, optimizer=opt, config=ds)
    return engine, optimizer, ds.get("zero_optimization", {}).get("stage", 0) == 3, ds


def inference_engine(model, ds: dict):
    """A frozen model (reference, reward) partitioned by ZeRO-3 like the trained ones, or left whole
    under ZeRO-1/2 (they shard only optimizer state and gradients, which a frozen model has none of)."""
    if ds.get("zero_optimization", {}).get("stage", 0) != 3:
        return model
    import deepspeed

    cfg = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {
        k: v for k, v in ds["zero_optimization"].items() if not k.startswith("offload_optimizer")}}
    engine, *_ = deepspeed.initialize(model=model, config=cfg)
    engine.eval()
    return engine.module


def average_gradients(params, world_size: int) -> None:
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size


def mean_over_ranks(stats: dict, world_size: int) -> dict:
    """Every rank gets the mean of every statistic (so all see the same KL for the controller)."""
    if world_size == 1:
        return stats
    import torch.distributed as dist

    keys = sorted(stats)
    t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: v / world_size for k, v in zip(keys, t.tolist(), strict=True)}
