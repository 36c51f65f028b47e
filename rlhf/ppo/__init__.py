"""Our PPO for RLHF (TRL removed its PPO after 1.12): `core` holds the arithmetic (KL estimators,
shaped rewards, GAE, clipped losses, KL controllers), `rollout` the model passes, `trainer` the loop."""

from .core import (
    AdaptiveKLController,
    FixedKLController,
    gae,
    kl_per_token,
    policy_loss,
    shaped_rewards,
    value_loss,
)
from .rollout import Rollout, ValueModel, rollout
from .trainer import PPOConfig, PPOTrainer, kl_trace_summary, last_checkpoint

__all__ = [
    "AdaptiveKLController", "FixedKLController", "PPOConfig", "PPOTrainer", "Rollout", "ValueModel", "gae",
    "kl_per_token", "kl_trace_summary", "last_checkpoint", "policy_loss", "rollout", "shaped_rewards", "value_loss",
]
