"""The PPO arithmetic against values worked out by hand (numbers small enough to check on paper)."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.ppo import core


def test_gae_matches_hand_computation():
    # One response of 3 tokens, then padding. γ = 0.9, λ = 0.5.
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.2, 9.9]])  # 9.9 sits on padding: must be ignored
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = core.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # δ2 = 1 + 0.9·0 − 0.2 = 0.8            A2 = 0.8
    # δ1 = 0 + 0.9·0.2 − 0.4 = −0.22        A1 = −0.22 + 0.45·0.8 = 0.14
    # δ0 = 0 + 0.9·0.4 − 0.5 = −0.14        A0 = −0.14 + 0.45·0.14 = −0.077
    assert adv.tolist()[0] == pytest.approx([-0.077, 0.14, 0.8, 0.0], abs=1e-6)
    assert ret.tolist()[0] == pytest.approx([0.423, 0.54, 1.0, 0.0], abs=1e-6)


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.1, -0.2, 2.0], [0.3, 0.0, 0.0]])
    values = torch.tensor([[1.0, 2.0, 3.0], [0.5, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    adv, ret = core.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert ret[0].tolist() == pytest.approx([1.9, 1.8, 2.0])  # Σ future rewards
    assert adv[0].tolist() == pytest.approx([0.9, -0.2, -1.0])
    assert ret[1].tolist() == pytest.approx([0.3, 0.0, 0.0]) and adv[1].tolist() == pytest.approx([-0.2, 0, 0])


def test_shaped_rewards_put_the_score_on_the_last_real_token():
    kl = torch.tensor([[0.2, 0.4, 0.6], [1.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    r = core.shaped_rewards(torch.tensor([2.0, -1.0]), kl, mask, kl_coef=0.5)
    assert r[0].tolist() == pytest.approx([-0.1, -0.2, 2.0 - 0.3])
    assert r[1].tolist() == pytest.approx([-0.5 - 1.0, 0.0, 0.0])


def test_kl_penalty_is_zero_when_policy_equals_reference():
    logp = torch.log_softmax(torch.randn(4, 6), -1)
    for est in ("k1", "k3"):
        assert torch.equal(core.kl_per_token(logp, logp, est), torch.zeros_like(logp))
    mask = torch.ones(4, 6)
    r = core.shaped_rewards(torch.zeros(4), core.kl_per_token(logp, logp), mask, kl_coef=0.3)
    assert torch.count_nonzero(r) == 0


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert core.kl_per_token(logp, ref, "k1").item() == pytest.approx(math.log(2))
    # k3 = (ρ − 1) − log ρ, ρ = 0.25/0.5 = 0.5  ->  −0.5 + log 2
    assert core.kl_per_token(logp, ref, "k3").item() == pytest.approx(-0.5 + math.log(2))
    assert core.kl_per_token(ref, logp, "k3").item() >= 0  # k3 is never negative
    with pytest.raises(ValueError):
        core.kl_per_token(logp, ref, "k2")


def test_policy_loss_clips_by_hand():
    # ratio 1.5 with A = +1 is clipped to 1.2; ratio 0.5 with A = −1 is clipped to 0.8.
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    loss, stats = core.policy_loss(new, old, adv, torch.ones(1, 3), clip_range=0.2)
    # per token max(−A·ρ, −A·clip(ρ)): max(−1.5, −1.2) = −1.2; max(0.5, 0.8) = 0.8; max(−2.2, −2.2) = −2.2
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(2 / 3)
    lr = torch.log(torch.tensor([1.5, 0.5, 1.1]))
    assert stats["approxkl"].item() == pytest.approx(0.5 * float((lr**2).mean()), abs=1e-6)
    # Clipped tokens carry no gradient; the unclipped one does.
    new.requires_grad_(True)
    core.policy_loss(new, old, adv, torch.ones(1, 3), 0.2)[0].backward()
    assert new.grad[0, 0] == 0 and new.grad[0, 1] == 0 and new.grad[0, 2] != 0


def test_policy_loss_ignores_padding():
    new, old = torch.tensor([[0.1, 50.0]]), torch.zeros(1, 2)
    loss, _ = core.policy_loss(new, old, torch.tensor([[1.0, 1.0]]), torch.tensor([[1, 0]]), 0.2)
    assert loss.item() == pytest.approx(-math.exp(0.1))


def test_value_loss_clips_by_hand():
    old = torch.tensor([[1.0, 1.0]])
    new = torch.tensor([[2.0, 1.1]])
    ret = torch.tensor([[3.0, 0.0]])
    loss, stats = core.value_loss(new, old, ret, torch.ones(1, 2), clip_range=0.2)
    # token 0: max((2−3)², (1.2−3)²) = 3.24;  token 1: max(1.21, 1.21) = 1.21
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1.21) / 2)
    assert stats["clipfrac"].item() == pytest.approx(0.5)


def test_masked_whiten_and_explained_variance():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w = core.masked_whiten(x, mask)
    assert w[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-4) and w[0, 3] == 0
    ret = torch.tensor([[1.0, 2.0, 3.0]])
    assert core.explained_variance(ret, ret, torch.ones(1, 3)) == pytest.approx(1.0)
    assert core.explained_variance(torch.full((1, 3), 2.0), ret, torch.ones(1, 3)) == pytest.approx(0.0)


def test_adaptive_controller_moves_beta_towards_the_target():
    ctl = core.AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(current_kl=9.0, n_steps=10)  # e = clip(0.5, ±0.2) = 0.2 -> β·(1 + 0.2·0.1)
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl = core.AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(current_kl=5.4, n_steps=10)  # e = −0.1 -> β·(1 − 0.01)
    assert ctl.value == pytest.approx(0.1 * 0.99)
    ctl.update(current_kl=6.0, n_steps=10)  # on target: unchanged
    assert ctl.value == pytest.approx(0.1 * 0.99)
    fixed = core.FixedKLController(0.1)
    fixed.update(100.0, 10)
    assert fixed.value == 0.1
    restored = core.AdaptiveKLController(0.5, 6.0, 100)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value


def test_truncated_importance_sampling_weights_by_hand():
    # two responses: [3 tokens], [2 tokens + padding]; log π_old − log μ per token
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    mu = torch.tensor([[-1.5, -2.0, -2.0], [-0.5, -1.2, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # token level, cap 2: exp(0.5)=1.6487, exp(0)=1, exp(1.5)=4.48 -> 2 (capped); exp(-0.5)=0.6065, exp(0.2)=1.2214
    w, stats = core.truncated_is_weights(old, mu, mask, "token", cap=2.0)
    expect = torch.tensor([[math.exp(0.5), 1.0, 2.0], [math.exp(-0.5), math.exp(0.2), 0.0]])
    assert torch.allclose(w, expect, atol=1e-6)
    assert stats["is_clipped_share"] == pytest.approx(1 / 5)
    assert stats["logprob_diff_mean"] == pytest.approx((0.5 + 0 + 1.5 + 0.5 + 0.2) / 5)
    assert stats["logprob_diff_max"] == pytest.approx(1.5)
    # sequence level: one weight per response, exp(sum): exp(2.0)=7.39 -> 2 (capped); exp(-0.3)=0.7408
    w, stats = core.truncated_is_weights(old, mu, mask, "sequence", cap=2.0)
    assert torch.allclose(w, torch.tensor([[2.0, 2.0, 2.0], [math.exp(-0.3), math.exp(-0.3), 0.0]]), atol=1e-6)
    assert stats["is_clipped_share"] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="token or sequence"):
        core.truncated_is_weights(old, mu, mask, "tok")


def test_policy_loss_weights_each_token_by_its_importance_weight():
    logp = torch.tensor([[-1.0, -1.0]])
    adv = torch.tensor([[1.0, -2.0]])
    mask = torch.ones(1, 2)
    w = torch.tensor([[0.5, 2.0]])
    # ratio 1 (unclipped): per-token loss −A; weighted mean (−1·0.5 + 2·2) / 2 = 1.75
    loss, _ = core.policy_loss(logp, logp, adv, mask, 0.2, is_weights=w)
    assert loss.item() == pytest.approx(1.75)
    assert core.policy_loss(logp, logp, adv, mask, 0.2)[0].item() == pytest.approx(0.5)


def test_explained_variance_of_constant_returns_is_undefined():
    """Every return equal (every response empty, scored alike): no variance to explain -> NaN, not the
    -95,346 that 1 - Var(R - V) / 1e-8 gave (it plots as a collapse of the critic)."""
    import math

    ret = torch.full((2, 3), 0.1234)  # float32 rounding leaves Var(R) ~1e-17, not 0
    values = torch.tensor([[0.2, 0.5, -0.1], [0.0, 0.3, 0.1]])
    assert math.isnan(core.explained_variance(values, ret, torch.ones(2, 3)))
    small = torch.tensor([[1e-3, 2e-3, 3e-3]])  # small but real variation stays defined
    assert core.explained_variance(small, small, torch.ones(1, 3)) == pytest.approx(1.0)
