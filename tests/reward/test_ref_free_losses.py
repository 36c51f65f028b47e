"""SimPO and ORPO losses (rlhf.reward.ref_free) against their papers' equations."""

from __future__ import annotations

import math

import torch

from rlhf.reward.ref_free import log_odds, orpo_loss, simpo_loss


def test_simpo_is_a_margin_logistic_loss_on_mean_log_probs():
    c, r = torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -1.0])
    got = simpo_loss(c, r, beta=2.0, gamma_beta_ratio=0.5)
    want = [-math.log(1 / (1 + math.exp(-2.0 * (1.0 - 0.5)))), -math.log(1 / (1 + math.exp(-2.0 * (-1.0 - 0.5))))]
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)
    # the margin γ makes a tie cost more than log 2
    assert simpo_loss(c, c, 2.0, 0.5)[0] > math.log(2) > simpo_loss(c, c, 2.0, 0.0)[0] - 1e-6


def test_orpo_is_sft_plus_an_odds_ratio_penalty():
    c, r = torch.tensor([-0.5]), torch.tensor([-1.5])
    p_c, p_r = math.exp(-0.5), math.exp(-1.5)
    ratio = math.log(p_c / (1 - p_c)) - math.log(p_r / (1 - p_r))
    loss, got_ratio = orpo_loss(c, r, lam=0.1)
    assert abs(got_ratio.item() - ratio) < 1e-5
    assert abs(loss.item() - (0.5 + 0.1 * math.log(1 + math.exp(-ratio)))) < 1e-5
    # with λ = 0 ORPO is SFT on the chosen response (mean NLL per token)
    assert orpo_loss(c, r, lam=0.0)[0].item() == 0.5
    assert torch.isfinite(log_odds(torch.tensor([0.0, -1e-9]))).all()  # P -> 1 stays finite
