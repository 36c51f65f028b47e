import math

import pytest
import torch
import torch.nn.functional as F

from rlhf.reward import kwise_loss, pairwise_loss


def brute_force(rewards, sizes, ranks):
    """Per-prompt mean of -log σ(r_i - r_j) over pairs with rank_i < rank_j, then mean over prompts."""
    per_prompt, start = [], 0
    for k in sizes:
        terms = [
            -F.logsigmoid(rewards[start + i] - rewards[start + j])
            for i in range(k)
            for j in range(k)
            if ranks[start + i] < ranks[start + j]
        ]
        if terms:
            per_prompt.append(torch.stack(terms).mean())
        start += k
    return torch.stack(per_prompt).mean(), sum(1 for _ in per_prompt)


@pytest.mark.parametrize("seed", range(5))
def test_kwise_matches_double_loop(seed):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, 7, (6,), generator=g).tolist()
    n = sum(sizes)
    rewards = torch.randn(n, generator=g)
    ranks = torch.cat([torch.randint(0, k, (k,), generator=g) for k in sizes])  # ties likely
    expected, n_prompts = brute_force(rewards, sizes, ranks)
    loss, stats = kwise_loss(rewards, sizes, ranks)
    assert torch.allclose(loss, expected)
    # Same result from group-id labels in shuffled order.
    group_ids = torch.repeat_interleave(torch.arange(len(sizes)) * 7 + 3, torch.tensor(sizes))
    perm = torch.randperm(n, generator=g)
    loss2, stats2 = kwise_loss(rewards[perm], group_ids[perm], ranks[perm])
    assert torch.allclose(loss2, expected)
    pairs = [
        (i, j)
        for s in range(len(sizes))
        for i in range(n)
        for j in range(n)
        if group_ids[i] == group_ids[j] == s * 7 + 3 and ranks[i] < ranks[j]
    ]
    assert int(stats["num_pairs"]) == int(stats2["num_pairs"]) == len(pairs)
    acc = sum(bool(rewards[i] > rewards[j]) for i, j in pairs) / len(pairs)
    assert stats["accuracy"].item() == pytest.approx(acc)
    assert int(stats["num_prompts"]) == n_prompts


def test_gradients_flow():
    rewards = torch.randn(7, requires_grad=True)
    loss, _ = kwise_loss(rewards, [3, 4], torch.tensor([0, 1, 2, 2, 0, 1, 3]))
    loss.backward()
    assert rewards.grad is not None and torch.isfinite(rewards.grad).all()
    assert (rewards.grad != 0).all()
    # Better-ranked responses are pushed up, worse ones down.
    assert rewards.grad[0] < 0 and rewards.grad[2] > 0


def test_all_tied_group_contributes_nothing():
    rewards = torch.tensor([0.3, -1.0, 2.0, 5.0, -4.0], requires_grad=True)
    ranks = torch.tensor([0, 1, 1, 1, 1])  # second group (3 responses) fully tied
    loss, stats = kwise_loss(rewards, [2, 3], ranks)
    alone, _ = kwise_loss(rewards[:2], [2], ranks[:2])
    assert torch.allclose(loss, alone)
    assert int(stats["num_pairs"]) == 1 and int(stats["num_prompts"]) == 1
    loss.backward()
    assert (rewards.grad[2:] == 0).all()


def test_no_pairs_at_all_is_zero_with_graph():
    rewards = torch.randn(3, requires_grad=True)
    loss, stats = kwise_loss(rewards, [3], torch.zeros(3, dtype=torch.long))
    assert loss.item() == 0.0 and int(stats["num_pairs"]) == 0
    loss.backward()


def test_k2_reduces_to_pairwise():
    chosen, rejected = torch.randn(5), torch.randn(5)
    rewards = torch.stack([chosen, rejected], dim=1).flatten()  # c0 r0 c1 r1 ...
    ranks = torch.tensor([0, 1] * 5)
    loss, _ = kwise_loss(rewards, [2] * 5, ranks)
    assert torch.allclose(loss, pairwise_loss(chosen, rejected))


def test_hand_computed_values():
    loss, stats = kwise_loss(torch.tensor([1.0, 0.0]), [2], torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert stats["accuracy"].item() == 1.0
    assert pairwise_loss(
        torch.tensor([1.0]), torch.tensor([0.0]), margin=torch.tensor([1.0])
    ).item() == pytest.approx(math.log(2))
