"""A reward model as a scorer of (prompt, response) pairs: what PPO, GRPO/RLOO, the generate stage
and the evaluation call. Pairs are tokenised by `rlhf.data.RewardEncoder`, exactly as the reward
stage trained on them (prompt cut from the left to the model's training length)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlhf.data.reward_encode import RewardEncoder

from .evaluate import score_ids


class RewardScorer:
    """`scorer(prompts, responses) -> list[float]`: one reward per response (higher is better).

    `prompts`: text or message lists; `responses`: text (a reply to a conversation is taken as the
    assistant's turn). The model is used in eval mode; scores come back in float32."""

    def __init__(self, model, tokenizer, max_length: int, batch_size: int = 32):
        self.model, self.tokenizer, self.max_length = model, tokenizer, int(max_length)
        self.encoder = RewardEncoder(tokenizer, self.max_length)
        self.batch_size = batch_size

    def ids(self, prompts: Sequence[Any], responses: Sequence[Any]) -> list[list[int]]:
        return self.encoder.encode_scored(list(prompts), list(responses))

    def __call__(self, prompts: Sequence[Any], responses: Sequence[Any]) -> list[float]:
        return score_ids(self.model, self.ids(prompts, responses), self.tokenizer.pad_token_id,
                         self.batch_size).tolist()
