"""Held-out evaluation of a reward model: score sequences, then pairwise accuracy.

Works on encoded rows (`rlhf.data.RewardEncoder`: columns chosen_ids/rejected_ids or
response_ids/ranks), so a model is judged on exactly the sequences it would be trained on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .losses import kwise_loss, pairwise_loss


def _pad_id(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None) -> int:
    # The model's own pad id first: a causal-LM classifier finds the last real token by it.
    pad_id = model.config.get_text_config().pad_token_id
    if pad_id is None and tokenizer is not None:
        pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("neither model.config.pad_token_id nor the tokenizer's pad_token_id is set")
    return pad_id


@torch.no_grad()
def score_ids(model: PreTrainedModel, ids: Sequence[Sequence[int]], pad_token_id: int, batch_size: int = 16):
    """Rewards [n] (float32, CPU) of token-id sequences, in eval mode, in right-padded batches."""
    ids = list(ids)  # a datasets Column would be re-read from Arrow on every index
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # Batch sequences of similar length together (less padding), then restore the order.
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    scores = torch.empty(len(ids))
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(ids[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                input_ids[row, : len(ids[i])] = torch.as_tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            scores[chunk] = logits.squeeze(-1).float().cpu()
    finally:
        model.train(was_training)
    return scores


def _summary(rewards: torch.Tensor) -> dict[str, float]:
    return {
        "reward_mean": rewards.mean().item(),
        "reward_std": rewards.std().item() if rewards.numel() > 1 else 0.0,
    }


def evaluate_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    dataset: Dataset,
    batch_size: int = 16,
) -> dict[str, float]:
    """Pairwise accuracy (share of pairs with r_chosen > r_rejected) on tokenize_pairs output."""
    chosen, rejected = dataset["chosen_ids"], dataset["rejected_ids"]
    rewards = score_ids(model, list(chosen) + list(rejected), _pad_id(model, tokenizer), batch_size)
    r_c, r_r = rewards[: len(chosen)], rewards[len(chosen) :]
    return {
        "accuracy": (r_c > r_r).float().mean().item(),
        "loss": pairwise_loss(r_c, r_r).item(),
        **_summary(rewards),
        "margin_mean": (r_c - r_r).mean().item(),
        "n": len(chosen),
    }


def evaluate_ranked(
    model: PreTrainedModel,
    dataset: Dataset,
    batch_size: int = 16,
    pad_token_id: int | None = None,
) -> dict:
    """Pairwise accuracy over non-tied pairs of tokenize_ranked output, overall and by K."""
    response_ids, ranks = dataset["response_ids"], dataset["ranks"]
    sizes = [len(r) for r in response_ids]
    pad_id = pad_token_id if pad_token_id is not None else _pad_id(model, None)
    rewards = score_ids(model, [ids for row in response_ids for ids in row], pad_id, batch_size)
    flat_ranks = torch.tensor([r for row in ranks for r in row])
    loss, stats = kwise_loss(rewards, sizes, flat_ranks)

    by_k = defaultdict(list)  # K -> indices of its responses in the flat vector
    start = 0
    for k in sizes:
        by_k[k].extend(range(start, start + k))
        start += k
    accuracy_by_k = {}
    for k, idx in sorted(by_k.items()):
        _, s = kwise_loss(rewards[idx], [k] * (len(idx) // k), flat_ranks[idx])
        if s["num_pairs"] > 0:
            accuracy_by_k[k] = s["accuracy"].item()
    return {
        # every pair tied: accuracy is undefined (the loss's 0/1 would read as "always wrong")
        "accuracy": stats["accuracy"].item() if int(stats["num_pairs"]) > 0 else float("nan"),
        "loss": loss.item(),
        "accuracy_by_k": accuracy_by_k,
        **_summary(rewards),
        "n_prompts": len(sizes),
        "n_pairs": int(stats["num_pairs"]),
    }
