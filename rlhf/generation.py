"""Sampling from a policy and scoring its samples: the shared engine of the generate and eval stages.

- `sample`: k completions per prompt, batched, KV-cached `generate`, seeded per batch so two models
  sampled with the same seed see the same random stream.
- `completion_logprobs`: log π(y|x) summed over the completion tokens, for KL estimates.
- `RewardScorer`: a reward-model artifact as a scorer of (prompt, completion) pairs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class GenerationConfig:
    num_samples: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0  # 1.0: samples come from the policy itself, so the KL estimate is unbiased
    top_k: int = 0
    top_p: float = 1.0
    batch_size: int = 64  # prompts per generate call
    seed: int = 0

    @classmethod
    def from_mapping(cls, m) -> GenerationConfig:
        return cls(**{k: m[k] for k in cls.__dataclass_fields__ if k in m and m[k] is not None})


@dataclass
class Samples:
    prompts: list[str]  # one per sample (repeated k times)
    prompt_index: list[int]  # which input prompt each sample answers
    completions: list[str]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]  # up to and including EOS, no padding


@contextlib.contextmanager
def _left_padding(tokenizer):
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = side


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence[str], gen: GenerationConfig, progress: bool = True,
           desc: str = "sampling", shard: tuple[int, int] = (0, 1)) -> Samples:
    """`shard=(rank, world)`: only batches b with b % world == rank. Each batch keeps the seed it has
    in one process, so the shards of all ranks put together (`merge_samples`) are exactly the
    samples one process draws."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    out = Samples([], [], [], [], [])
    starts = range(0, len(prompts), gen.batch_size)
    try:
        for b, start in enumerate(tqdm(starts, desc=desc, disable=not progress, leave=False)):
            if b % shard[1] != shard[0]:
                continue
            chunk = list(prompts[start : start + gen.batch_size])
            with _left_padding(tokenizer):
                enc = tokenizer(chunk, return_tensors="pt", padding=True)
            torch.manual_seed(gen.seed * 100_003 + b)  # same stream for policy and reference
            seqs = model.generate(
                input_ids=enc.input_ids.to(device), attention_mask=enc.attention_mask.to(device),
                do_sample=True, temperature=gen.temperature, top_k=gen.top_k or None, top_p=gen.top_p,
                max_new_tokens=gen.max_new_tokens, num_return_sequences=gen.num_samples,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                # The model here is whole on this rank (never a ZeRO-3 shard); transformers would
                # otherwise keep stepping in lockstep with ranks that are not generating.
                synced_gpus=False,
            ).cpu()
            width = enc.input_ids.shape[1]
            for row in range(seqs.shape[0]):
                i = row // gen.num_samples
                p_ids = enc.input_ids[i][enc.attention_mask[i].bool()].tolist()
                c_ids = seqs[row, width:].tolist()
                if eos is not None and eos in c_ids:
                    c_ids = c_ids[: c_ids.index(eos) + 1]
                out.prompts.append(chunk[i])
                out.prompt_index.append(start + i)
                out.prompt_ids.append(p_ids)
                out.completion_ids.append(c_ids)
                out.completions.append(tokenizer.decode(c_ids, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return out


def merge_samples(shards: Sequence[Samples]) -> Samples:
    """The shards of `sample(..., shard=(r, world))` from every rank, in one-process order."""
    rows = sorted(((i, s, j) for s in shards for j, i in enumerate(s.prompt_index)), key=lambda r: (r[0], r[2]))
    out = Samples([], [], [], [], [])
    for _, s, j in rows:  # a prompt's samples all come from one shard, in their drawn order
        for field in ("prompts", "prompt_index", "completions", "prompt_ids", "completion_ids"):
            getattr(out, field).append(getattr(s, field)[j])
    return out


@torch.no_grad()
def completion_logprobs(model, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                        pad_token_id: int, batch_size: int = 32) -> torch.Tensor:
    """[n] sum over completion tokens of log p(token | prefix) under `model` (float32, CPU)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = len(prompt_ids)
    result = torch.zeros(n)
    order = sorted(range(n), key=lambda i: len(prompt_ids[i]) + len(completion_ids[i]))
    try:
        for start in range(0, n, batch_size):
            chunk = order[start : start + batch_size]
            seqs = [list(prompt_ids[i]) + list(completion_ids[i]) for i in chunk]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            target = torch.zeros((len(chunk), width), dtype=torch.bool)
            for r, (i, s) in enumerate(zip(chunk, seqs, strict=True)):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
                target[r, len(prompt_ids[i]) : len(s)] = True
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            result[chunk] = (logp * target[:, 1:]).sum(dim=1)
    finally:
        model.train(was_training)
    return result


class RewardScorer:
    """A reward-model artifact (or an in-memory reward model) as `(prompts, completions) -> scores`."""

    def __init__(self, model, tokenizer, max_length: int):
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    @classmethod
    def from_artifact(cls, run_dir: str, what: str = "stage.reward_model") -> RewardScorer:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from .artifacts import read_artifact
        from .distributed import zero3_init_off

        art = read_artifact(run_dir, expect_kinds=("reward",), what=what)
        path = art.path(art.model_dir)
        with zero3_init_off():  # a scorer is a whole model on every rank, never a ZeRO-3 shard
            model = AutoModelForSequenceClassification.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(art.path(art.tokenizer_dir))
        limits = [getattr(model.config, "max_position_embeddings", None), tok.model_max_length]
        return cls(model, tok, min(x for x in limits if isinstance(x, int) and x > 0))

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        from rlhf.reward import score_responses

        return score_responses(self.model, self.tokenizer, prompts, completions, self.max_length).tolist()
