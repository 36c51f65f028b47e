"""The engine plumbing of our PPO, beside its loop: two small backends with one interface, so
`trainer.py` has one path (as CleanRL's loop does) whichever runs underneath.

- `PlainBackend`: one AdamW over policy + value; gradients averaged over ranks by hand
  (`rlhf.distributed.average_gradients`), clipped, then stepped.
- `DeepSpeedBackend`: one DeepSpeed engine owns policy + value (one optimizer, one ZeRO partitioning);
  frozen models (reference, reward) become ZeRO-3 inference engines.

Data parallelism: each rank rolls out its own `rollout_batch_size` prompts; every statistic, the KL
the controller sees included, is averaged over ranks (`rlhf.distributed.mean_over_ranks`), so every
rank keeps the same β.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from .. import distributed
from .config import PPOConfig


class PolicyAndValue(torch.nn.Module):
    """The two trained models as one module: one DeepSpeed engine (one optimizer, one ZeRO
    partitioning) owns both."""

    def __init__(self, policy, value):
        super().__init__()
        self.policy, self.value = policy, value


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


class PlainBackend:
    """Policy + value under one AdamW, without DeepSpeed (one process, or data parallel by hand)."""

    engine = None
    zero3 = False

    def __init__(self, params: list[dict], config: PPOConfig):
        self.config = config
        self.optimizer = torch.optim.AdamW(params, weight_decay=config.weight_decay)

    def frozen(self, model):
        return model

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss) -> None:
        """One micro-batch: its share of the mini-batch's gradient."""
        (loss / self.config.gradient_accumulation_steps).backward()

    def step(self, guard, step: str, values: dict) -> float:
        """End of a mini-batch: average across ranks, clip and apply the accumulated gradients, unless
        the guard skips a non-finite step (weights and optimizer state then stay as they are).
        Returns the gradient norm before clipping."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        distributed.average_gradients(params)
        gn = float(torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm))
        if guard is not None and not guard.check(step, {**values, "grad_norm": gn}):
            self.zero_grad()
            return gn
        self.optimizer.step()
        return gn

    def save(self, path: Path, policy, value, rank: int) -> None:
        if rank == 0:  # replicas: rank 0's weights are everyone's
            torch.save({"policy": dict(policy.state_dict()), "value": value.state_dict(),
                        "optimizer": self.optimizer.state_dict()}, path / "state.pt")

    def load(self, path: Path, policy, value) -> None:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        policy.load_state_dict(state["policy"])
        value.load_state_dict(state["value"])
        self.optimizer.load_state_dict(state["optimizer"])


class DeepSpeedBackend:
    """Policy + value owned by one DeepSpeed engine under the DeepSpeed config `ds`."""

    def __init__(self, policy, value, params: list[dict], config: PPOConfig, ds: dict, world_size: int):
        self.engine, self.optimizer, self.zero3, self.ds = engine_for(policy, value, params, config, ds, world_size)

    def frozen(self, model):
        return inference_engine(model, self.ds)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss) -> None:
        """The engine scales by 1/accumulation and steps at the accumulation boundary."""
        self.engine.backward(loss)
        self.engine.step()

    def step(self, guard, step: str, values: dict) -> float:
        """The engine has stepped already: the norm is reported and stopping is what the guard has left."""
        gn = self.engine.get_global_grad_norm()
        if guard is not None:
            guard.check(step, {**values, "grad_norm": gn})
        return float(gn) if gn is not None else float("nan")

    def save(self, path: Path, policy, value, rank: int) -> None:
        self.engine.save_checkpoint(str(path), tag="engine")  # collective

    def load(self, path: Path, policy, value) -> None:
        self.engine.load_checkpoint(str(path), tag="engine")
