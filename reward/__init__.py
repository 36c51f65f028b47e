"""Reward models, imported as ``rlhf.reward``: losses, the K-wise trainer, held-out evaluation, the
scorer used by the online stages, and named reward functions. Knows nothing of Hydra or of the stages."""

from .evaluate import evaluate_pairs, evaluate_ranked, score_ids
from .kwise_trainer import DataCollatorForRanked, KWiseRewardTrainer
from .losses import kwise_loss, pairwise_loss
from .scorer import RewardScorer
from .tokenize import TokenizeReport, tokenize_pairs, tokenize_ranked

__all__ = [
    "DataCollatorForRanked", "KWiseRewardTrainer", "RewardScorer", "TokenizeReport", "evaluate_pairs",
    "evaluate_ranked", "kwise_loss", "pairwise_loss", "score_ids", "tokenize_pairs", "tokenize_ranked",
]
