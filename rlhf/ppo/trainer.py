"""The PPO loop: rollout -> score -> KL-shaped rewards -> GAE -> PPO epochs -> KL controller.

Each piece lives in `core.py` (arithmetic) or `rollout.py` (models); this file only sequences them,
logs, and checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import core
from .rollout import ValueModel, logprobs_and_entropy, reference_context, rollout

log = logging.getLogger(__name__)


@dataclass
class PPOConfig:
    """Our PPO's options (the `trainer:` node of `stage=ppo`); defaults with the reason beside each."""

    total_iterations: int = 60  # rollout + optimise cycles
    rollout_batch_size: int = 64  # prompts (= responses) per iteration
    mini_batch_size: int = 16  # responses per optimizer step
    gradient_accumulation_steps: int = 1  # micro-batches per mini-batch
    ppo_epochs: int = 4  # passes over each rollout batch (InstructGPT/Stiennon: 4)
    learning_rate: float = 1.0e-5  # policy
    value_learning_rate: float | None = None  # null = learning_rate
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gamma: float = 1.0  # no discounting inside one response (Ziegler et al.)
    lam: float = 0.95  # GAE λ
    clip_range: float = 0.2  # PPO ε for the policy ratio
    value_clip_range: float = 0.2  # ε for the value update
    vf_coef: float = 0.1  # weight of the value loss in the joint backward pass
    kl_estimator: str = "k1"  # k1 (log-ratio) or k3 (non-negative, lower variance) per token
    kl_control: str = "adaptive"  # adaptive (Ziegler et al.) | fixed
    kl_coef: float = 0.05  # β: the initial (adaptive) or constant (fixed) KL penalty
    kl_target: float = 6.0  # adaptive: KL per sequence (nats) to steer to
    kl_horizon: int = 10000  # adaptive: larger = slower reaction (Ziegler et al.: 10000 samples)
    whiten_rewards: bool = False  # rescale the shaped rewards per batch
    whiten_advantages: bool = True
    score_clip: float | None = None  # clip the sequence score to ±this before shaping
    missing_eos_penalty: float | None = None  # subtract from the score of a response with no EOS
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    save_every: int = 10  # iterations between checkpoints (resume point); 0 = never
    logging_every: int = 1
    seed: int = 42

    def __post_init__(self):
        if self.rollout_batch_size % self.mini_batch_size:
            raise ValueError(f"rollout_batch_size {self.rollout_batch_size} must be a multiple of mini_batch_size "
                             f"{self.mini_batch_size}")
        if self.mini_batch_size % self.gradient_accumulation_steps:
            raise ValueError(f"mini_batch_size {self.mini_batch_size} must be a multiple of "
                             f"gradient_accumulation_steps {self.gradient_accumulation_steps}")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be k1 or k3, got {self.kl_estimator!r}")
        if self.kl_control not in ("adaptive", "fixed"):
            raise ValueError(f"kl_control must be adaptive or fixed, got {self.kl_control!r}")

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}


Scorer = Callable[[list[str], list[str]], list[float]]


class PolicyAndValue(torch.nn.Module):
    """The two trained models as one module: one DeepSpeed engine (one optimizer, one ZeRO
    partitioning) owns both."""

    def __init__(self, policy, value):
        super().__init__()
        self.policy, self.value = policy, value


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def fill_deepspeed_config(ds: dict, config: PPOConfig, world_size: int, hidden_size: int) -> dict:
    """Our PPO's values for the "auto" entries of a conf/deepspeed config (as HF's Trainer fills them)."""
    import copy

    ds = copy.deepcopy(ds)
    micro = config.mini_batch_size // config.gradient_accumulation_steps
    fixed = {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": config.gradient_accumulation_steps,
             "train_batch_size": micro * config.gradient_accumulation_steps * world_size,
             "gradient_clipping": config.max_grad_norm}
    for k, v in fixed.items():
        if ds.get(k, "auto") == "auto":
            ds[k] = v
    for prec in ("bf16", "fp16"):  # our PPO trains in the model's dtype (fp32 on CPU)
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


def inference_engine(model, ds: dict):
    """A frozen model (reference, reward) partitioned by ZeRO-3 like the trained ones, or left whole
    under ZeRO-1/2 (they shard only optimizer state and gradients, which a frozen model has none of)."""
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage != 3:
        return model
    import deepspeed

    cfg = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {
        k: v for k, v in ds["zero_optimization"].items() if not k.startswith("offload_optimizer")}}
    engine, *_ = deepspeed.initialize(model=model, config=cfg)
    engine.eval()
    return engine.module


class PPOTrainer:
    """Single process, or one of several (torchrun / deepspeed launcher): each rank rolls out its own
    `rollout_batch_size` prompts; gradients are averaged across ranks (by DeepSpeed under
    `deepspeed_config`, ZeRO-partitioning policy and value, else by an all-reduce); the KL
    controller sees the mean KL of all ranks, so every rank keeps the same β."""

    def __init__(self, config: PPOConfig, policy, value: ValueModel, tokenizer, scorer: Scorer,
                 prompts: list[str], reference=None, output_dir: Path | None = None,
                 log_fn: Callable[[dict, int], None] | None = None, deepspeed_config: dict | None = None):
        self.cfg, self.policy, self.value, self.tokenizer = config, policy, value, tokenizer
        self.scorer, self.prompts, self.ref_model = scorer, list(prompts), reference
        self.output_dir = Path(output_dir) if output_dir else None
        self.log_fn = log_fn
        self.rank, self.world_size = _world()
        lr_v = config.value_learning_rate or config.learning_rate
        params = [
            {"params": [p for p in policy.parameters() if p.requires_grad], "lr": config.learning_rate},
            {"params": [p for p in value.parameters() if p.requires_grad], "lr": lr_v},
        ]
        self.engine = None
        self.zero3 = False
        if deepspeed_config is not None:
            import deepspeed

            hidden = int(getattr(policy.config, "hidden_size", 0) or 1024)
            ds = fill_deepspeed_config(deepspeed_config, config, self.world_size, hidden)
            self.zero3 = ds.get("zero_optimization", {}).get("stage", 0) == 3
            both = PolicyAndValue(policy, value)
            if "optimizer" in ds:  # DeepSpeed's own optimizer (e.g. CPU Adam for offload)
                self.engine, self.optimizer, _, _ = deepspeed.initialize(model=both, model_parameters=params, config=ds)
            else:
                opt = torch.optim.AdamW(params, weight_decay=config.weight_decay)
                self.engine, self.optimizer, _, _ = deepspeed.initialize(model=both, optimizer=opt, config=ds)
            if reference is not None:
                self.ref_model = inference_engine(reference, ds)
            if hasattr(scorer, "model"):
                scorer.model = inference_engine(scorer.model, ds)
        else:
            self.optimizer = torch.optim.AdamW(params, weight_decay=config.weight_decay)
        self.kl_ctl = (core.AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
                       if config.kl_control == "adaptive" else core.FixedKLController(config.kl_coef))
        self.iteration = 0
        self.history: list[dict] = []
        self._rng = random.Random(config.seed + 1009 * self.rank)  # each rank its own prompt order
        self._order: list[int] = []

    # ---- data -------------------------------------------------------------------------------
    def _next_prompts(self) -> list[str]:
        out = []
        while len(out) < self.cfg.rollout_batch_size:
            if not self._order:
                self._order = list(range(len(self.prompts)))
                self._rng.shuffle(self._order)
            out.append(self.prompts[self._order.pop()])
        return out

    # ---- one iteration ------------------------------------------------------------------------
    @torch.no_grad()
    def make_experience(self) -> dict:
        c = self.cfg
        self.policy.eval()
        self.value.eval()
        t0 = time.perf_counter()
        ro = rollout(self.policy, self.tokenizer, self._next_prompts(), max_new_tokens=c.max_new_tokens,
                     temperature=c.temperature, top_k=c.top_k, top_p=c.top_p,
                     seed=c.seed * 1_000_003 + self.iteration * 7_919 + self.rank,
                     synced=self.zero3 and self.world_size > 1)
        rollout_s = time.perf_counter() - t0
        mask = ro.response_mask.float()
        old_logp, entropy = logprobs_and_entropy(self.policy, ro, c.temperature)
        ref_model, ctx = reference_context(self.policy, self.ref_model)
        with ctx:
            ref_logp, _ = logprobs_and_entropy(ref_model, ro, c.temperature)
        values = self.value(ro)
        scores = torch.tensor(self.scorer(ro.prompts, ro.completions), dtype=torch.float32)
        raw_scores = scores.clone()
        if c.missing_eos_penalty is not None:
            scores = scores - c.missing_eos_penalty * (~ro.ended.cpu()).float()
        if c.score_clip is not None:
            scores = scores.clamp(-c.score_clip, c.score_clip)
        kl = core.kl_per_token(old_logp, ref_logp, c.kl_estimator) * mask
        rewards = core.shaped_rewards(scores.to(kl.device), kl, mask, self.kl_ctl.value)
        if c.whiten_rewards:
            rewards = core.masked_whiten(rewards, mask, shift_mean=False)
        adv, returns = core.gae(rewards, values, mask, c.gamma, c.lam)
        if c.whiten_advantages:
            adv = core.masked_whiten(adv, mask)
        kl_seq = (core.kl_per_token(old_logp, ref_logp, "k1") * mask).sum(1)  # reported: log-ratio summed
        return {
            "rollout": ro, "mask": mask, "old_logp": old_logp, "values": values, "adv": adv, "returns": returns,
            "stats": {
                "objective/kl": kl_seq.mean().item(),
                "objective/scores": raw_scores.mean().item(),
                "objective/rlhf_reward": (scores.to(kl_seq.device) - self.kl_ctl.value * kl_seq).mean().item(),
                "objective/entropy": core.masked_mean(entropy, mask).item() * 1.0,
                "objective/entropy_seq": (entropy * mask).sum(1).mean().item(),
                "val/explained_variance": core.explained_variance(values, returns, mask),
                "val/mean": core.masked_mean(values, mask).item(),
                "response_length": mask.sum(1).mean().item(),
                "ended_with_eos": ro.ended.float().mean().item(),
                "kl_coef": self.kl_ctl.value,
                "tokens_per_s/rollout": mask.sum().item() / max(rollout_s, 1e-9),
            },
        }

    def optimise(self, exp: dict) -> dict:
        c = self.cfg
        ro, B = exp["rollout"], exp["rollout"].input_ids.shape[0]
        micro = c.mini_batch_size // c.gradient_accumulation_steps
        agg: dict[str, list[float]] = {}
        self.policy.train()
        self.value.train()
        t0, n_tokens = time.perf_counter(), 0
        gen = torch.Generator().manual_seed(c.seed * 7919 + self.iteration)
        for _ in range(c.ppo_epochs):
            perm = torch.randperm(B, generator=gen)
            for m0 in range(0, B, c.mini_batch_size):
                mini = perm[m0 : m0 + c.mini_batch_size]
                self.optimizer.zero_grad(set_to_none=True)
                for u0 in range(0, len(mini), micro):
                    idx = mini[u0 : u0 + micro].to(ro.input_ids.device)
                    sub, mask = ro.select(idx), exp["mask"][idx]
                    logp, entropy = logprobs_and_entropy(self.policy, sub, c.temperature)
                    pg, pg_stats = core.policy_loss(logp, exp["old_logp"][idx], exp["adv"][idx], mask, c.clip_range)
                    v = self.value(sub)
                    vf, vf_stats = core.value_loss(v, exp["values"][idx], exp["returns"][idx], mask,
                                                   c.value_clip_range)
                    if self.engine is not None:  # scales by 1/accumulation, steps at the boundary
                        self.engine.backward(pg + c.vf_coef * vf)
                        self.engine.step()
                    else:
                        ((pg + c.vf_coef * vf) / c.gradient_accumulation_steps).backward()
                    n_tokens += int(mask.sum())
                    for k, val in (("loss/policy", pg.item()), ("loss/value", vf.item()),
                                   ("policy/approxkl", pg_stats["approxkl"].item()),
                                   ("policy/clipfrac", pg_stats["clipfrac"].item()),
                                   ("policy/ratio", pg_stats["ratio"].item()),
                                   ("val/clipfrac", vf_stats["clipfrac"].item()),
                                   ("policy/entropy", core.masked_mean(entropy.detach(), mask).item())):
                        agg.setdefault(k, []).append(val)
                if self.engine is not None:
                    gn = self.engine.get_global_grad_norm()
                    agg.setdefault("grad_norm", []).append(float(gn) if gn is not None else float("nan"))
                    continue
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                if self.world_size > 1:
                    _average_gradients(params, self.world_size)
                gn = torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm)
                agg.setdefault("grad_norm", []).append(float(gn))
                self.optimizer.step()
        self.policy.eval()
        self.value.eval()
        stats = {k: sum(v) / len(v) for k, v in agg.items()}
        stats["tokens_per_s/train"] = n_tokens / max(time.perf_counter() - t0, 1e-9)
        return stats

    def train(self, progress: bool = True) -> list[dict]:
        from tqdm.auto import tqdm

        c = self.cfg
        bar = tqdm(total=c.total_iterations, initial=self.iteration, desc="PPO", disable=not progress or self.rank != 0)
        while self.iteration < c.total_iterations:
            exp = self.make_experience()
            stats = _mean_over_ranks({**exp["stats"], **self.optimise(exp)}, self.world_size)
            self.kl_ctl.update(stats["objective/kl"], c.rollout_batch_size)
            self.iteration += 1
            stats["iteration"] = self.iteration
            self.history.append(stats)
            if self.log_fn and self.rank == 0 and self.iteration % c.logging_every == 0:
                self.log_fn(stats, self.iteration)
            bar.set_postfix(score=f"{stats['objective/scores']:.3f}", kl=f"{stats['objective/kl']:.2f}",
                            beta=f"{stats['kl_coef']:.3f}")
            bar.update(1)
            if c.save_every and self.output_dir and self.iteration % c.save_every == 0 \
                    and self.iteration < c.total_iterations:
                self.save_checkpoint()
        bar.close()
        return self.history

    # ---- checkpoints --------------------------------------------------------------------------
    def _barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def _state_name(self) -> str:
        return "trainer_state.json" if self.rank == 0 else f"trainer_state-{self.rank}.json"

    def save_checkpoint(self) -> Path:
        """checkpoints/iter-N/: policy + value weights and optimizer (a DeepSpeed checkpoint under
        DeepSpeed), KL controller, each rank's data order, history. Collective on several ranks."""
        root = self.output_dir / "checkpoints"
        tmp, final = root / f".iter-{self.iteration}.tmp", root / f"iter-{self.iteration}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self._barrier()
        if self.engine is not None:
            self.engine.save_checkpoint(str(tmp), tag="engine")
        elif self.rank == 0:  # replicas: rank 0's weights are everyone's
            torch.save({"policy": dict(self.policy.state_dict()), "value": self.value.state_dict(),
                        "optimizer": self.optimizer.state_dict()}, tmp / "state.pt")
        meta = {"iteration": self.iteration, "kl_ctl": self.kl_ctl.state_dict(), "order": self._order,
                "rng": self._rng.getstate()[1], "history": self.history}
        if self.rank != 0:
            (tmp / self._state_name()).write_text(json.dumps(meta, default=float))
        self._barrier()
        if self.rank == 0:
            (tmp / self._state_name()).write_text(json.dumps(meta, default=float))  # last: marks it complete
            tmp.rename(final)  # complete or absent, never half-written
            for old in root.glob("iter-*"):
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
        self._barrier()
        return final

    def load_checkpoint(self, path: Path) -> None:
        if self.engine is not None:
            self.engine.load_checkpoint(str(path), tag="engine")
        else:
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
            self.policy.load_state_dict(state["policy"])
            self.value.load_state_dict(state["value"])
            self.optimizer.load_state_dict(state["optimizer"])
        meta = json.loads((path / self._state_name()).read_text())
        self.iteration = int(meta["iteration"])
        self.kl_ctl.load_state_dict(meta["kl_ctl"])
        self._order = list(meta["order"])
        self._rng.setstate((3, tuple(meta["rng"]), None))
        self.history = list(meta["history"])


def _average_gradients(params, world_size: int) -> None:
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size


def _mean_over_ranks(stats: dict, world_size: int) -> dict:
    """Every rank gets the mean of every statistic (so all see the same KL for the controller)."""
    if world_size == 1:
        return stats
    import torch.distributed as dist

    keys = sorted(stats)
    t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: v / world_size for k, v in zip(keys, t.tolist(), strict=True)}


def last_checkpoint(output_dir: Path) -> Path | None:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.glob("iter-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def kl_trace_summary(history: list[dict], target: float | None) -> dict:
    """How well the KL held over the last half of training (for the adaptive controller)."""
    half = history[len(history) // 2 :]
    kls = [h["objective/kl"] for h in half]
    out = {"kl_last_half_mean": sum(kls) / len(kls), "kl_last_half_min": min(kls), "kl_last_half_max": max(kls),
           "kl_coef_final": history[-1]["kl_coef"]}
    if target:
        out["kl_last_half_within_30pct"] = sum(abs(k / target - 1) <= 0.3 for k in kls) / len(kls)
        out["kl_target"] = target
    out["kl_last_half_std"] = math.sqrt(sum((k - out["kl_last_half_mean"]) ** 2 for k in kls) / len(kls))
    return out
