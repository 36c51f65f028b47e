"""Reward models, imported as ``rlhf.reward``: losses, tokenisation with left truncation, the K-wise
trainer and held-out evaluation. Knows nothing of Hydra or of the stages."""

from .evaluate import evaluate_pairs, evaluate_ranked, score_responses, score_texts
from .kwise_trainer import DataCollatorForRanked, KWiseRewardTrainer
from .losses import kwise_loss, pairwise_loss
from .tokenize import TokenizeReport, tokenize_pairs, tokenize_ranked, tokenize_texts

__all__ = [
    "DataCollatorForRanked",
    "KWiseRewardTrainer",
    "TokenizeReport",
    "evaluate_pairs",
    "evaluate_ranked",
    "kwise_loss",
    "pairwise_loss",
    "score_responses",
    "score_texts",
    "tokenize_pairs",
    "tokenize_ranked",
    "tokenize_texts",
]
