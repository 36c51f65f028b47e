"""Reward-model losses: pairwise Bradley–Terry and K-wise (InstructGPT) ranking.

Pure functions of reward tensors; no model, tokenizer or trainer in sight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pairwise_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Bradley–Terry loss of a batch of preference pairs.

        loss = mean_b [ -log σ(r_chosen[b] - r_rejected[b] - margin[b]) ]

    ``margin`` (per pair or scalar, default 0) asks the chosen reward to lead by at least that much
    (Llama 2 reward models, Touvron et al. 2023).
    """
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def _group_index(group_ids: torch.Tensor | Sequence[int], n: int, device: torch.device) -> torch.Tensor:
    """Dense group index in [0, G) for each of the n rewards."""
    if isinstance(group_ids, torch.Tensor):
        if group_ids.shape != (n,):
            raise ValueError(f"group_ids has shape {tuple(group_ids.shape)}, expected ({n},)")
        return torch.unique(group_ids.to(device), return_inverse=True)[1]
    sizes = torch.as_tensor(list(group_ids), dtype=torch.long, device=device)
    if int(sizes.sum()) != n or bool((sizes < 1).any()):
        raise ValueError(f"group sizes {sizes.tolist()} must be positive and sum to {n}")
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)


def kwise_loss(
    rewards: torch.Tensor,
    group_ids: torch.Tensor | Sequence[int],
    ranks: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """K-wise ranking loss of InstructGPT (Ouyang et al. 2022, eq. 1).

    Each prompt g has K_g responses, all scored in one forward pass; ``rewards`` is the flat vector
    of all of them. For the ordered pairs of prompt g where response i is ranked better than j
    (rank_i < rank_j; rank 0 is best), with P_g the set of such pairs:

        loss_g = 1/|P_g| * sum_{(i,j) in P_g} -log σ(r_i - r_j)
        loss   = mean over prompts with |P_g| > 0 of loss_g

    Without ties |P_g| = C(K_g, 2), the 1/C(K,2) normalisation of InstructGPT, and every prompt
    weighs as one batch element however large its K. Tied pairs (equal rank) carry no preference and
    are skipped; a prompt whose responses are all tied contributes nothing.

    Args:
        rewards: [N] rewards of all responses, in any order.
        group_ids: [N] tensor naming each response's prompt (any integer labels), or a list of group
            sizes when the responses of each prompt are contiguous.
        ranks: [N] integer ranks within the prompt, 0 = best; ties allowed.

    Returns:
        ``(loss, stats)``; stats holds ``accuracy`` (share of the pairs in P with r_i > r_j),
        ``num_pairs`` (|P| summed over prompts) and ``num_prompts`` (prompts with |P_g| > 0), all
        detached.
    """
    n = rewards.shape[0]
    if rewards.dim() != 1 or ranks.shape != (n,):
        raise ValueError(f"rewards {tuple(rewards.shape)} and ranks {tuple(ranks.shape)} must both be ({n},)")
    group = _group_index(group_ids, n, rewards.device)
    num_groups = int(group.max()) + 1 if n else 0
    counts = torch.bincount(group, minlength=num_groups)
    k_max = int(counts.max()) if n else 0

    # Scatter into a padded [G, Kmax] layout: slot = position of the response within its group.
    order = torch.argsort(group, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n, device=rewards.device) - starts[group[order]]
    r = rewards.new_zeros(num_groups, k_max).index_put((group[order], slot), rewards[order])
    rk = torch.zeros(num_groups, k_max, dtype=torch.long, device=rewards.device)
    rk = rk.index_put((group[order], slot), ranks.to(rewards.device, torch.long)[order])
    valid = torch.zeros(num_groups, k_max, dtype=torch.bool, device=rewards.device)
    valid = valid.index_put((group[order], slot), torch.ones(n, dtype=torch.bool, device=rewards.device))

    # pairs[g, i, j]: both real responses and i strictly better than j.
    pairs = valid[:, :, None] & valid[:, None, :] & (rk[:, :, None] < rk[:, None, :])
    diff = r[:, :, None] - r[:, None, :]
    pair_loss = torch.where(pairs, -F.logsigmoid(diff), torch.zeros_like(diff))
    pairs_per_group = pairs.sum(dim=(1, 2))
    has_pairs = pairs_per_group > 0
    if bool(has_pairs.any()):
        per_group = pair_loss.sum(dim=(1, 2))[has_pairs] / pairs_per_group[has_pairs]
        loss = per_group.mean()
    else:  # nothing to learn from; keep the graph so backward() still works
        loss = rewards.sum() * 0.0

    with torch.no_grad():
        num_pairs = pairs_per_group.sum()
        correct = (pairs & (diff > 0)).sum()
        stats = {
            "accuracy": correct.float() / num_pairs.clamp(min=1),
            "num_pairs": num_pairs,
            "num_prompts": has_pairs.sum(),
        }
    return loss, stats
