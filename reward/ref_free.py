"""Reference-free preference losses: SimPO and ORPO, on a policy's own log-probabilities.

Pure functions of per-sequence mean log-probabilities (nats per completion token, shape ``(B,)``);
no model, tokenizer or trainer in sight. Neither loss needs a reference model: the KL anchor of DPO
is replaced by length normalisation and a target margin (SimPO) or by an SFT term (ORPO).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def simpo_loss(chosen_avg: torch.Tensor, rejected_avg: torch.Tensor, beta: float,
               gamma_beta_ratio: float) -> torch.Tensor:
    """SimPO (Meng, Xia & Chen 2024, arXiv:2405.14734, eq. 6), per pair, shape ``(B,)``:

        loss = -log σ( β·(mean log π(y_w|x) - mean log π(y_l|x)) - γ ),   γ = β · gamma_beta_ratio

    The reward is the length-normalised log-likelihood scaled by β (the paper uses β = 2-2.5 and
    γ/β = 0.5 on 7-8B models); γ is the margin the chosen reward must exceed the rejected one by.
    """
    return -F.logsigmoid(beta * (chosen_avg - rejected_avg - gamma_beta_ratio))


def log_odds(avg_logp: torch.Tensor) -> torch.Tensor:
    """log( P / (1 - P) ) with P = exp(mean log-prob): ORPO's odds of a sequence, in nats."""
    avg = avg_logp.clamp(max=-1e-6)  # P < 1: the odds stay finite
    return avg - torch.log(-torch.expm1(avg))


def orpo_loss(chosen_avg: torch.Tensor, rejected_avg: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ORPO (Hong, Lee & Thorne 2024, arXiv:2403.07691, eq. 6-7), per pair, shape ``(B,)``:

        loss = -mean log π(y_w|x)  +  λ · -log σ( log odds(y_w|x) - log odds(y_l|x) )

    The first term is SFT on the chosen completion (mean NLL per token), the second the odds-ratio
    penalty (λ = 0.1 in the paper's and TRL's defaults). Returns (loss, log odds ratio).
    """
    ratio = log_odds(chosen_avg) - log_odds(rejected_avg)
    return -chosen_avg - lam * F.logsigmoid(ratio), ratio
