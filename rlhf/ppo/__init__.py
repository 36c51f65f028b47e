"""Our PPO for RLHF (TRL removed its PPO after 1.12): `core` holds the arithmetic (KL estimators,
shaped rewards, GAE, clipped losses, KL controllers), `config` the options, `rollout` the experience
and the value model, `parallel` the rank/engine plumbing, `trainer` the loop.

Names are imported on first use, so `rlhf.ppo.config` (read when the CLI composes a config) does
not import torch."""

import importlib

_WHERE = {
    "PPOConfig": "config", "AdaptiveKLController": "core", "FixedKLController": "core", "gae": "core",
    "kl_per_token": "core", "policy_loss": "core", "shaped_rewards": "core", "value_loss": "core",
    "Experience": "rollout", "ValueModel": "rollout", "PPOTrainer": "trainer", "kl_trace_summary": "trainer",
    "last_checkpoint": "trainer",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
