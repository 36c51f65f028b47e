"""`PPOConfig`: our PPO's options, the `trainer:` node of `stage=ppo`. The defaults live here, each
with its reason (conf/trainer/ppo.yaml only overrides); `rlhf.runner.validate` checks a config's
types and ranges against these fields (`metadata` bounds) before any model loads, and the stage
constructs it there so its cross-field rules (`MULTIPLE_OF`) are said before training too."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal


def _b(default, **bounds):
    return field(default=default, metadata=bounds)


# Cross-field rules: (field, the field it must be a multiple of). A rollout batch splits into whole
# mini-batches (one optimizer step each), a mini-batch into whole micro-batches.
MULTIPLE_OF = (("rollout_batch_size", "mini_batch_size"), ("mini_batch_size", "gradient_accumulation_steps"))


class PPOConfigError(ValueError):
    """PPOConfig's refusal of its cross-field rules; `problems(prefix)`: one line per broken rule, the
    field names as a config writes them (`problems("trainer.")`)."""

    def __init__(self, broken: list[tuple[str, int, str, int]]):
        self.broken = broken
        super().__init__("; ".join(self.problems()))

    def problems(self, prefix: str = "") -> list[str]:
        return [f"{prefix}{a}: {va} must be a multiple of {prefix}{b} ({vb})" for a, va, b, vb in self.broken]


@dataclass
class PPOConfig:
    total_iterations: int = _b(60, ge=1)  # rollout + optimise cycles
    rollout_batch_size: int = _b(64, ge=1)  # prompts (= responses) per iteration, per process
    mini_batch_size: int = _b(16, ge=1)  # responses per optimizer step
    gradient_accumulation_steps: int = _b(1, ge=1)  # micro-batches per mini-batch
    ppo_epochs: int = _b(4, ge=1)  # passes over each rollout batch (InstructGPT/Stiennon: 4)
    learning_rate: float = _b(1.0e-5, gt=0)  # policy; 0.5B-8B: 1e-6..1e-5, tiny models need more
    value_learning_rate: float | None = _b(None, gt=0)  # null = learning_rate
    weight_decay: float = _b(0.0, ge=0)
    max_grad_norm: float = _b(1.0, gt=0)
    gamma: float = _b(1.0, ge=0, le=1)  # no discounting inside one response (Ziegler et al.)
    lam: float = _b(0.95, ge=0, le=1)  # GAE λ
    clip_range: float = _b(0.2, gt=0)  # PPO ε for the policy ratio
    value_clip_range: float = _b(0.2, gt=0)  # ε for the value update
    vf_coef: float = _b(0.1, ge=0)  # weight of the value loss in the joint backward pass
    kl_estimator: Literal["k1", "k3"] = "k1"  # k1 (log-ratio) or k3 (non-negative, lower variance) per token
    kl_control: Literal["adaptive", "fixed"] = "adaptive"  # adaptive (Ziegler et al.) | fixed
    kl_coef: float = _b(0.05, ge=0)  # β: the initial (adaptive) or constant (fixed) KL penalty
    kl_target: float = _b(6.0, gt=0)  # adaptive: KL per sequence (nats) to steer to
    kl_horizon: int = _b(10000, ge=1)  # adaptive: samples of the whole job per full correction (Ziegler: 10000)
    whiten_rewards: bool = False  # rescale the shaped rewards per batch
    whiten_advantages: bool = True  # per batch: the usual PPO normalisation
    score_clip: float | None = _b(None, gt=0)  # clip the sequence score to ±this before shaping
    missing_eos_penalty: float | None = None  # subtract from the score of a response with no EOS
    max_new_tokens: int = _b(48, ge=1)  # response cap per rollout
    temperature: float = _b(1.0, gt=0)  # 1.0: sample from the policy itself (the KL penalty assumes it)
    top_k: int = _b(0, ge=0)  # 0 = off
    top_p: float = _b(1.0, gt=0, le=1)
    # Rollouts from vLLM (generation.backend=vllm): PPO's ratio uses the trainer's recomputed log-probs and
    # truncated importance sampling corrects for the engine's own (rlhf.ppo.core.truncated_is_weights)
    importance_sampling_level: Literal["token", "sequence", "none"] = "token"  # token: TIS as Yao et al. 2025
    importance_sampling_cap: float = _b(2.0, gt=0)  # C: weights above it are truncated (Yao et al. use 2)
    save_every: int = _b(10, ge=0)  # iterations between checkpoints (resume point); 0 = never
    logging_every: int = _b(1, ge=1)
    seed: int = 42

    def __post_init__(self):
        def whole(v) -> bool:  # a wrong type or range is said by validation's field checks
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        broken = [(a, getattr(self, a), b, getattr(self, b)) for a, b in MULTIPLE_OF
                  if whole(getattr(self, a)) and whole(getattr(self, b)) and getattr(self, a) % getattr(self, b)]
        if broken:
            raise PPOConfigError(broken)
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be k1 or k3, got {self.kl_estimator!r}")
        if self.kl_control not in ("adaptive", "fixed"):
            raise ValueError(f"kl_control must be adaptive or fixed, got {self.kl_control!r}")

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}
