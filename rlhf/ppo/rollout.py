"""What one PPO iteration collects (`Experience`) and the value model's pass over it.

Sequences are laid out by `rlhf.sampling` ([left-padded prompt | response]); the value of the state
before response token t is read from the hidden state that predicts it (column P-1+t).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..sampling import Batch, position_ids


@dataclass
class Experience:
    """One iteration's rollouts on this rank and what PPO learns from them.

    Shapes: B rollouts on this rank, R the response width (tokens after the prompt, padded).
    `mask` is 1 on response tokens up to and including the stop token."""

    batch: Batch  # the sampled sequences [B, P+R]
    prompts: list  # [B] canonical prompts (text or messages)
    completions: list[str]  # [B] decoded responses
    mask: torch.Tensor  # [B, R] float
    old_logprobs: torch.Tensor  # [B, R] log π_old(token_t | s_t) at rollout time
    values: torch.Tensor  # [B, R] V_old(s_t)
    advantages: torch.Tensor  # [B, R] GAE advantages (whitened if configured)
    returns: torch.Tensor  # [B, R] value targets A_t + V_t
    stats: dict[str, float] = field(default_factory=dict)  # rollout statistics (objective/*, val/*)
    is_weights: torch.Tensor | None = None  # [B, R] truncated IS weights (rollouts from vLLM), else None

    def __len__(self) -> int:
        return self.mask.shape[0]

    def select(self, idx: torch.Tensor) -> Experience:
        """The rows `idx` (a minibatch) as an Experience of their own."""
        rows = idx.tolist()
        return Experience(self.batch.select(idx), [self.prompts[i] for i in rows],
                          [self.completions[i] for i in rows], self.mask[idx], self.old_logprobs[idx],
                          self.values[idx], self.advantages[idx], self.returns[idx],
                          is_weights=None if self.is_weights is None else self.is_weights[idx])


class ValueModel(nn.Module):
    """A scalar head on every position of a decoder backbone: V(s_t) for each response token.

    Built from a sequence-classification model (a reward-model artifact, or a causal LM loaded with
    a fresh head: `rlhf.models.build_value_model`), whose `score` head is applied to every hidden
    state instead of only the last. Saved as that sequence-classification model
    (`rlhf.models.save_model(value.seq, ...)`, gathered whole under ZeRO-3), so any Hugging Face tool
    loads it.
    """

    def __init__(self, seq_cls_model):
        super().__init__()
        if not hasattr(seq_cls_model, "score"):
            raise ValueError(f"{type(seq_cls_model).__name__} has no per-token `score` head: the value model "
                             "needs a decoder backbone (Llama, Qwen, Mistral, GPT-2 ...)")
        self.seq = seq_cls_model
        self.backbone = getattr(seq_cls_model, seq_cls_model.base_model_prefix)

    def forward(self, batch: Batch) -> torch.Tensor:
        """[B, R] values of the states before each response token (float32)."""
        h = self.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=position_ids(batch.attention_mask)).last_hidden_state
        P = batch.prompt_width
        return self.seq.score(h[:, P - 1 : -1]).squeeze(-1).float()
