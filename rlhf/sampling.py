"""Sampling from a causal LM and the log-probabilities of what it sampled: one engine for PPO's
rollouts, the generate stage and the policy-vs-reference evaluation.

A sampled batch is laid out as ``[left-padded prompt (width P) | response (width R), right-padded]``,
exactly as `generate` returns it, so every row's response starts at column P and the logits at
columns P-1 .. P+R-2 predict the response tokens. Position ids are recomputed from the mask, so left
padding does not shift positions. Prompts come in as token ids (`rlhf.data.PromptEncoder`), so
padding is done here, per call: no tokenizer's padding side is ever changed. Models are put in
eval mode (no dropout) for every pass here and given back in the mode they came in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .schema import Generation


@dataclass
class Batch:
    """Sampled sequences. Shapes: B rows (prompts x samples), P prompt width, R response width."""

    input_ids: torch.Tensor  # [B, P+R] long: left-padded prompt, then the response right-padded
    attention_mask: torch.Tensor  # [B, P+R] long: 1 on real prompt tokens and on response tokens
    prompt_width: int  # P
    response_mask: torch.Tensor  # [B, R] long: 1 on response tokens up to and including the stop token
    ended: torch.Tensor  # [B] bool: the response ended with a stop token (EOS / end of turn)
    # [B, R] float32 log-prob of each response token under the distribution that sampled it, when the
    # engine reports it (vLLM: after temperature/top-k/top-p); None from HF generate
    sampler_logprobs: torch.Tensor | None = None

    @property
    def responses(self) -> torch.Tensor:
        """[B, R] response ids (pad after the stop token)."""
        return self.input_ids[:, self.prompt_width :]

    def select(self, idx: torch.Tensor) -> Batch:
        return Batch(self.input_ids[idx], self.attention_mask[idx], self.prompt_width, self.response_mask[idx],
                     self.ended[idx], None if self.sampler_logprobs is None else self.sampler_logprobs[idx])

    def prompt_lists(self) -> list[list[int]]:
        P = self.prompt_width
        return [row[: P][mask[:P].bool()].tolist() for row, mask in zip(self.input_ids, self.attention_mask,
                                                                         strict=True)]

    def response_lists(self) -> list[list[int]]:
        return [row[m.bool()].tolist() for row, m in zip(self.responses, self.response_mask, strict=True)]


@contextlib.contextmanager
def as_reference(policy, reference=None) -> Iterator:
    """The reference model for the block: `reference`, or, when it is None, the PEFT policy with its
    adapter disabled (no second copy of the weights)."""
    if reference is not None:
        yield reference
        return
    if not hasattr(policy, "disable_adapter"):
        raise ValueError("no reference model and the policy has no adapter to disable")
    with policy.disable_adapter():
        yield policy


def logprob_fn(model, reference_of=None, temperature: float = 1.0):
    """f(batch) -> [B] sequence log-probs under `model`, or, with `reference_of=policy`, under the
    reference `as_reference(policy, model)` gives (for `sample(score_with=...)`)."""

    def f(batch: Batch) -> torch.Tensor:
        if reference_of is None:
            return sequence_logprobs(model, batch, temperature)
        with as_reference(reference_of, model) as ref:
            return sequence_logprobs(ref, batch, temperature)

    return f


@contextlib.contextmanager
def evaluating(*models) -> Iterator[None]:
    """Eval mode (dropout off) for the block; each model's own mode restored afterwards."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, was in zip(models, modes, strict=True):
            m.train(was)


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, W] ids, [N, W] mask) of id lists padded on the left to the longest."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


@torch.no_grad()
def generate(model, prompt_ids: Sequence[Sequence[int]], *, pad_id: int, stop_ids: Sequence[int],
             max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             num_samples: int = 1, seed: int = 0, synced: bool = False, greedy: bool = False) -> Batch:
    """`num_samples` sampled responses per prompt (rows prompt-major), batched and KV-cached, each
    stopped at its first stop token. `seed` seeds the whole batch, so two models sampled with the
    same seed see the same random stream. `synced`: every rank keeps stepping until all ranks are
    done (ZeRO-3 gathers each layer collectively). `greedy`: argmax decoding (sampling settings unused)."""
    device = next(model.parameters()).device
    ids, mask = left_pad(prompt_ids, pad_id, device)
    stops = list(stop_ids)
    torch.manual_seed(seed)
    with evaluating(model):
        seqs = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=not greedy, temperature=None if greedy else temperature,
            top_k=None if greedy else top_k or None, top_p=None if greedy else top_p, max_new_tokens=max_new_tokens, num_return_sequences=num_samples, pad_token_id=pad_id,
            eos_token_id=stops or None, synced_gpus=synced,
        )
    P = ids.shape[1]
    resp = seqs[:, P:]
    is_stop = torch.isin(resp, torch.tensor(stops, device=resp.device)) if stops else torch.zeros_like(resp).bool()
    after = (is_stop.long().cumsum(dim=1) - is_stop.long()) > 0  # strictly after the first stop token
    response_mask = (~after).long()
    resp = resp.masked_fill(after, pad_id)
    prompt_mask = mask.repeat_interleave(num_samples, dim=0)
    return Batch(torch.cat([seqs[:, :P], resp], dim=1), torch.cat([prompt_mask, response_mask], dim=1), P,
                 response_mask, is_stop.any(dim=1))


def response_logits(model, batch: Batch) -> torch.Tensor:
    """[B, R, V] logits predicting each response token."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=position_ids(batch.attention_mask))
    P = batch.prompt_width
    return out.logits[:, P - 1 : -1]


def token_logprobs(model, batch: Batch, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, R] log π(token_t | s_t), [B, R] entropy of π(· | s_t)), float32, zero outside the response.

    Differentiable (PPO's update calls it with gradients on); uses TRL's fused log-softmax/entropy."""
    from trl.trainer.utils import selective_log_softmax_and_entropy

    logits = response_logits(model, batch).float()
    return selective_log_softmax_and_entropy(logits, batch.responses, entropy_requires_grad=False,
                                             temperature=temperature, row_mask=batch.response_mask)


@torch.no_grad()
def sequence_logprobs(model, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    """[B] log π(response | prompt): the sum over response tokens, in eval mode (float32, CPU)."""
    with evaluating(model):
        logp, _ = token_logprobs(model, batch, temperature)
    return (logp * batch.response_mask).sum(dim=1).float().cpu()


def batches(n: int, size: int, shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[int, range]]:
    """(batch number b, prompt positions) of the batches of `size` over n prompts that rank
    `shard[0]` of `shard[1]` samples: b % world == rank. Batch b keeps seed offset b whatever the
    world size, so the shards of all ranks together are exactly what one process samples."""
    rank, world = shard
    for b, start in enumerate(range(0, n, size)):
        if b % world == rank:
            yield b, range(start, min(n, start + size))


def batch_seed(seed: int, b: int) -> int:
    return seed * 100_003 + b


@dataclass
class Samples:
    """k samples per prompt, flattened prompt-major, as lists (what the generate stage writes)."""

    prompts: list  # the canonical prompt (text or messages) of each sample, repeated k times
    prompt_index: list[int]  # which input prompt each sample answers
    completions: list[str]  # decoded, special tokens skipped
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]  # up to and including the stop token, no padding
    ended: list[bool]  # the completion ended with a stop token (not cut at max_new_tokens)
    logprobs: dict[str, list[float]]  # name -> log p(completion | prompt) under that model

    @classmethod
    def empty(cls, names: Sequence[str] = ()) -> Samples:
        return cls([], [], [], [], [], [], {n: [] for n in names})


def lockstep_batches(n: int, size: int, shard: tuple[int, int]) -> list[tuple[int, range, bool]]:
    """(batch number, prompt positions, keep) of rank `shard[0]`'s batches, padded so that every rank
    runs the same number: ceil(batches / world). A rank with fewer runs a dummy batch (keep=False:
    its outputs are dropped) so that ZeRO-3, which gathers each layer collectively at every forward
    pass, sees the same passes on every rank."""
    rank, world = shard
    mine = [(b, span, True) for b, span in batches(n, size, shard)]
    n_batches = -(-n // size)
    rounds = -(-n_batches // world)
    dummy = (mine[0][0], mine[0][1], False) if mine else (0, range(0, min(n, size)), False)
    return mine + [dummy] * (rounds - len(mine))


def sample(model, tokenizer, prompts: Sequence, prompt_ids: Sequence[Sequence[int]], gen: Generation, *,
           stop_ids: Sequence[int], score_with: dict | None = None, shard: tuple[int, int] = (0, 1),
           progress: bool = True, desc: str = "sampling", engine=None, lockstep: bool = False) -> Samples:
    """`gen.num_samples` samples of each prompt in batches of `gen.batch_size` prompts, batch b seeded
    with `batch_seed(gen.seed, b)`; `score_with` {name: f(batch) -> [B] tensor}: also, e.g., the
    log-probability of every sample under another model (`logprob_fn`), in the same pass. `engine`:
    the generation engine (`rlhf.engines`; None: HF generate). `lockstep` (several ranks sharing a
    ZeRO-3 model): every rank runs the same number of batches (`lockstep_batches`) and generates
    with synchronised steps (`generate(synced=True)`); what each rank keeps is unchanged."""
    from tqdm.auto import tqdm

    names = list(score_with or {})
    out = Samples.empty(names)
    todo = (lockstep_batches(len(prompts), gen.batch_size, shard) if lockstep else
            [(b, span, True) for b, span in batches(len(prompts), gen.batch_size, shard)])
    for b, span, keep in tqdm(todo, desc=desc, disable=not progress, leave=False):
        batch = (engine.generate if engine is not None else generate)(
            model, [prompt_ids[i] for i in span], pad_id=tokenizer.pad_token_id, stop_ids=stop_ids,
            max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_k=gen.top_k,
            top_p=gen.top_p, num_samples=gen.num_samples, seed=batch_seed(gen.seed, b),
            **({"synced": True} if lockstep else {}))
        scored = {name: score_with[name](batch).tolist() for name in names}
        if not keep:
            continue
        for name in names:
            out.logprobs[name] += scored[name]
        responses = batch.response_lists()
        for row, c_ids in enumerate(responses):
            i = span[row // gen.num_samples]
            out.prompts.append(prompts[i])
            out.prompt_index.append(i)
            out.prompt_ids.append(list(prompt_ids[i]))
            out.completion_ids.append(c_ids)
            out.completions.append(tokenizer.decode(c_ids, skip_special_tokens=True))
        out.ended += batch.ended.tolist()
    return out


def merge_samples(shards: Sequence[Samples]) -> Samples:
    """The shards of `sample(..., shard=(r, world))` from every rank, in one-process order."""
    names = list(shards[0].logprobs) if shards else []
    rows = sorted(((i, s, j) for s in shards for j, i in enumerate(s.prompt_index)), key=lambda r: (r[0], r[2]))
    out = Samples.empty(names)
    for _, s, j in rows:  # a prompt's samples all come from one shard, in their drawn order
        for f in ("prompts", "prompt_index", "completions", "prompt_ids", "completion_ids", "ended"):
            getattr(out, f).append(getattr(s, f)[j])
        for n in names:
            out.logprobs[n].append(s.logprobs[n][j])
    return out
