"""Reward-model rows as datasets, tokenised by the one encoder training uses (`rlhf.data.RewardEncoder`).

Each sequence is ``[tokenizer's own leading specials, BOS if `model.add_bos`] prompt response [EOS]
[own trailing specials]`` (see `rlhf.data.reward_encode.SequenceFrame`); an over-long row loses the START of its prompt
first, in one window shared by all its responses, and a response longer than the whole budget keeps
its start. Nothing is dropped here: a row whose responses become identical after truncation is a
validation problem (`rlhf.data.load_splits` with a `RewardEncoder`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from rlhf.data.reward_encode import RewardEncoder
from rlhf.errors import UserError


@dataclass(frozen=True)
class TokenizeReport:
    n_rows: int
    n_truncated: int  # rows where the prompt or a response lost tokens


def _encode(rows: list[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int):
    encoded = RewardEncoder(tokenizer, max_length).encode(rows)
    problems = [f"row {i}: {e.problem.field}: {e.problem.detail}" for i, e in enumerate(encoded) if e.problem]
    if problems:
        raise UserError(problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else []),
                        title=f"{len(problems)} reward rows cannot be trained on")
    return [e.features for e in encoded], TokenizeReport(len(rows), sum(e.truncated for e in encoded))


def tokenize_pairs(rows: Iterable[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase,
                   max_length: int) -> tuple[Dataset, TokenizeReport]:
    """Pair rows ``{"prompt", "chosen", "rejected"[, "margin"]}`` -> columns ``chosen_ids``,
    ``rejected_ids`` (+ ``margin``): what TRL's RewardTrainer takes as already processed."""
    feats, report = _encode(list(rows), tokenizer, max_length)
    return Dataset.from_list(feats), report


def tokenize_ranked(rows: Iterable[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase,
                    max_length: int) -> tuple[Dataset, TokenizeReport]:
    """Ranked rows ``{"prompt", "responses": [K], "ranks": [K]}`` -> columns ``response_ids`` (K id
    lists sharing one prompt window) and ``ranks``: the input of KWiseRewardTrainer."""
    feats, report = _encode(list(rows), tokenizer, max_length)
    return Dataset.from_list(feats), report
