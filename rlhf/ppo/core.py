"""The arithmetic of PPO for RLHF, as small pure functions on [batch, response_len] tensors.

Conventions: `mask` is 1 on real response tokens (up to and including EOS) and 0 on padding.
Position t of a row is the t-th generated token; `values[:, t]` is V(s_t), the value of the state
before token t is emitted; `logprobs[:, t]` is log π(token_t | s_t).

References: Ziegler et al. 2019 (KL-penalised reward, adaptive KL controller), Schulman et al.
2016 (GAE) and 2017 (clipped surrogate), Huang et al. 2024 "The N Implementation Details of RLHF
with PPO" (reward at the EOS token, masked whitening, value clipping).
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    return var * n / (n - 1).clamp(min=1)  # unbiased, as whitening over a batch


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the unmasked entries; `shift_mean=False` only rescales (for rewards)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π || π_ref) from tokens sampled from π.

    k1 = log π − log π_ref (unbiased, can be negative per token);
    k3 = (ρ − 1) − log ρ with ρ = π_ref / π (unbiased, always ≥ 0, lower variance; Schulman 2020).
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r} (k1 or k3)")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """[B] index of the last real token of each row (0 for an empty row)."""
    return (mask.sum(dim=1) - 1).clamp(min=0).long()


def shaped_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """r_t = −β·KL_t on every response token, plus the sequence score at the last real token."""
    rewards = -kl_coef * kl * mask.to(kl.dtype)
    idx = last_token_index(mask)
    rewards[torch.arange(rewards.shape[0]), idx] += scores.to(rewards.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation (Schulman et al. 2016) over each response.

        δ_t = r_t + γ V_{t+1} − V_t        (V after the last real token is 0: the episode ends)
        A_t = δ_t + γ λ A_{t+1}
        R_t = A_t + V_t                    (the value targets)

    Returns (advantages, returns), zero on padding.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def truncated_is_weights(old_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, mask: torch.Tensor,
                         level: str = "token", cap: float = 2.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Truncated importance sampling (TIS; Yao et al. 2025, "Your efficient RL framework secretly
    brings you off-policy RL training"; TRL's `vllm_importance_sampling_mode=*_truncate`, OpenRLHF):
    the rollouts were sampled by an inference engine (μ) whose log-probs differ from the trainer's
    own (π_old) for the same weights, so each token's PPO loss is weighted by

        token:     w_t = min(π_old(y_t | s_t) / μ(y_t | s_t), C)
        sequence:  w_t = min(Π_t π_old(y_t | s_t) / μ(y_t | s_t), C)   (one weight for the whole response)

    `old_logprobs`, `sampler_logprobs`, `mask`: [B, R] (mask 1 on response tokens). Returns
    ([B, R] weights, zero outside the mask, no gradient; stats: `logprob_diff_mean` / `_max` of
    |log π_old − log μ| over response tokens, `is_clipped_share`: share of tokens (token level) or
    responses (sequence level) whose weight was capped at C, `is_weight_mean`)."""
    if level not in ("token", "sequence"):
        raise ValueError(f"importance sampling level must be token or sequence, got {level!r}")
    mask = mask.to(old_logprobs.dtype)
    diff = (old_logprobs - sampler_logprobs).detach() * mask
    log_w = diff if level == "token" else diff.sum(dim=1, keepdim=True).expand_as(diff)
    w = torch.exp(log_w)
    capped = w > cap
    weights = w.clamp(max=cap) * mask
    share = masked_mean(capped.float(), mask) if level == "token" else capped[:, 0].float().mean()
    return weights, {"logprob_diff_mean": float(masked_mean(diff.abs(), mask)),
                     "logprob_diff_max": float(diff.abs().max()) if diff.numel() else 0.0,
                     "is_clipped_share": float(share), "is_weight_mean": float(masked_mean(weights, mask))}


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_range: float,
                is_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate (Schulman et al. 2017): mean over tokens of max(−A·ρ, −A·clip(ρ, 1±ε)),
    each token's term times its importance weight when `is_weights` ([B, R], `truncated_is_weights`)
    is given."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    per_token = torch.maximum(unclipped, clipped)
    loss = masked_mean(per_token if is_weights is None else per_token * is_weights, mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approxkl": 0.5 * masked_mean(log_ratio**2, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: ½ · mean max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)."""
    clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    loss = 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean(((values - returns) ** 2 < (clipped - returns) ** 2).float(), mask)}
    return loss, stats


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(R − V) / Var(R): 1 = perfect critic, 0 = no better than a constant. Undefined (NaN) when
    the returns do not vary (e.g. every response empty and scored alike): Var(R) at float rounding
    level (<= 1e-10 of their mean square) would otherwise divide into a huge negative number."""
    var_r = masked_var(returns, mask)
    scale = masked_mean(returns.float() ** 2, mask)
    if not bool(var_r > 1e-10 * scale) or not bool(var_r > 0):
        return float("nan")
    return float(1.0 - masked_var(returns - values, mask) / var_r)


class FixedKLController:
    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, d: dict) -> None:
        self.value = float(d["value"])


class AdaptiveKLController:
    """Ziegler et al. 2019, §2.2: steer the measured KL towards `target`.

        e_t = clip(KL_t / target − 1, −0.2, 0.2)
        β_{t+1} = β_t · (1 + K_β · e_t),   K_β = n_steps / horizon
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise ValueError("adaptive KL control needs target > 0 and horizon > 0")
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, d: dict) -> None:
        self.value = float(d["value"])
