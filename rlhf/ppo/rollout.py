"""Rollouts and the forward passes over them.

A rollout batch is laid out as [left-padded prompt (width P) | response (width R), right-padded],
exactly as `generate` returns it, so every row's response starts at column P and the logits at
columns P-1 .. P+R-2 predict the response tokens. Position ids are recomputed from the mask so
left padding does not shift positions.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Rollout:
    input_ids: torch.Tensor  # [B, P+R]
    attention_mask: torch.Tensor  # [B, P+R]
    prompt_width: int  # P
    response_mask: torch.Tensor  # [B, R] 1 on response tokens up to and including EOS
    prompts: list[str]
    completions: list[str]
    ended: torch.Tensor  # [B] bool: the response ended with EOS

    @property
    def responses(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width :]

    def select(self, idx: torch.Tensor) -> Rollout:
        i = idx.tolist()
        return Rollout(self.input_ids[idx], self.attention_mask[idx], self.prompt_width, self.response_mask[idx],
                       [self.prompts[j] for j in i], [self.completions[j] for j in i], self.ended[idx])


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


@torch.no_grad()
def rollout(policy, tokenizer, prompts: list[str], *, max_new_tokens: int, temperature: float = 1.0,
            top_k: int = 0, top_p: float = 1.0, seed: int = 0, synced: bool = False) -> Rollout:
    """One sampled response per prompt, batched and KV-cached, stopped at EOS. `synced`: every rank
    keeps stepping until all ranks are done (ZeRO-3 gathers each layer collectively)."""
    device = next(policy.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    torch.manual_seed(seed)
    seqs = policy.generate(
        input_ids=enc.input_ids.to(device), attention_mask=enc.attention_mask.to(device), do_sample=True,
        temperature=temperature, top_k=top_k or None, top_p=top_p, max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, synced_gpus=synced,
    )
    P = enc.input_ids.shape[1]
    resp = seqs[:, P:]
    eos = tokenizer.eos_token_id
    is_eos = resp == eos if eos is not None else torch.zeros_like(resp, dtype=torch.bool)
    ended = is_eos.any(dim=1)
    # 1 up to and including the first EOS; everything after it is padding.
    after_eos = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
    response_mask = (~after_eos).long()
    resp = resp.masked_fill(after_eos, tokenizer.pad_token_id)
    input_ids = torch.cat([enc.input_ids.to(device), resp], dim=1)
    attention_mask = torch.cat([enc.attention_mask.to(device), response_mask], dim=1)
    completions = tokenizer.batch_decode(resp, skip_special_tokens=True)
    return Rollout(input_ids, attention_mask, P, response_mask, list(prompts), completions, ended)


def response_logits(model, ro: Rollout, temperature: float = 1.0) -> torch.Tensor:
    """[B, R, V] logits predicting each response token (scaled by the sampling temperature)."""
    out = model(input_ids=ro.input_ids, attention_mask=ro.attention_mask, position_ids=position_ids(ro.attention_mask))
    P = ro.prompt_width
    return out.logits[:, P - 1 : -1].float() / temperature


def logprobs_and_entropy(model, ro: Rollout, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, R] log π(token_t | s_t) and the entropy of π(· | s_t)."""
    logits = response_logits(model, ro, temperature)
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, ro.responses[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


class ValueModel(nn.Module):
    """A scalar head on every position of a decoder backbone: V(s_t) for each response token.

    Built from a sequence-classification model (a reward-model artifact, or a causal LM loaded with
    a fresh head), whose `score` head is applied to every hidden state instead of only the last.
    Saved as that sequence-classification model (`rlhf.models.save_model(value.seq, ...)`, gathered
    whole under ZeRO-3), so any Hugging Face tool loads it.
    """

    def __init__(self, seq_cls_model):
        super().__init__()
        if not hasattr(seq_cls_model, "score"):
            raise ValueError(f"{type(seq_cls_model).__name__} has no per-token `score` head: the value model "
                             "needs a decoder backbone (Llama, Qwen, Mistral, GPT-2 ...)")
        self.seq = seq_cls_model
        self.backbone = getattr(seq_cls_model, seq_cls_model.base_model_prefix)

    def forward(self, ro: Rollout) -> torch.Tensor:
        """[B, R] values of the states before each response token."""
        h = self.backbone(input_ids=ro.input_ids, attention_mask=ro.attention_mask,
                          position_ids=position_ids(ro.attention_mask)).last_hidden_state
        P = ro.prompt_width
        return self.seq.score(h[:, P - 1 : -1]).squeeze(-1).float()


def reference_context(policy, reference):
    """The reference log-probs come from `reference`, or, when it is None, from the PEFT policy with
    its adapter disabled (no second copy of the weights)."""
    if reference is not None:
        return reference, contextlib.nullcontext()
    if not hasattr(policy, "disable_adapter"):
        raise ValueError("no reference model and the policy has no adapter to disable")
    return policy, policy.disable_adapter()
