"""Reward models, imported as ``rlhf.reward``."""
