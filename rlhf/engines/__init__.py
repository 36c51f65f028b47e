"""The generation engine behind every sampler (PPO rollouts, stage=generate and best-of-n, the final
evaluation and its curves): Hugging Face `generate` or a colocated vLLM engine, one interface.

An engine's `generate(model, prompt_ids, ...)` returns a `rlhf.sampling.Batch` laid out exactly as
HF `generate` lays it out ([left-padded prompt | right-padded response]); the vLLM backend also fills
`Batch.sampler_logprobs` ([B, R] log-probs of each sampled token under the sampling distribution),
which PPO compares with its own recomputed log-probs (truncated importance sampling, rlhf.ppo.core).

`model` is the HF model whose distribution is wanted: the HF backend runs it; the vLLM backend first
makes its weights equal to that model's (`VLLMEngine.sync`, skipped when nothing changed since the
last sync), so the engine's weights follow the policy after every optimizer step without any call
from the training loop, and the same engine samples the reference (adapter disabled, or the frozen
copy) for the evaluation.

`generation.backend` (conf/generation/*.yaml) picks the backend; `engine_for(node, model)` builds it
(the vLLM engine once per process and architecture, cached: an engine starts in 20-50 s on CPU).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..sampling import Batch


class HFEngine:
    """Hugging Face `generate` (rlhf.sampling.generate): any model, no extra install."""

    name = "hf"

    def generate(self, model, prompt_ids: Sequence[Sequence[int]], *, pad_id: int, stop_ids: Sequence[int],
                 max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 num_samples: int = 1, seed: int = 0, synced: bool = False, greedy: bool = False) -> Batch:
        from ..sampling import generate

        return generate(model, prompt_ids, pad_id=pad_id, stop_ids=stop_ids, max_new_tokens=max_new_tokens,
                        temperature=temperature, top_k=top_k, top_p=top_p, num_samples=num_samples, seed=seed,
                        synced=synced, greedy=greedy)


HF = HFEngine()
_VLLM: dict[str, object] = {}  # one vLLM engine per process and model architecture


def engine_for(node: Mapping | None, model, max_length: int | None = None):
    """The engine `generation:` names for sampling `model` (an HF model, PEFT or not). `node`: the
    `generation:` config node (None or backend=hf: HF generate). `max_length`: prompt + response
    tokens the vLLM engine must hold (`generation.vllm.max_model_len` wins when set)."""
    if node is None or node.get("backend", "hf") == "hf":
        return HF
    from .vllm_engine import VLLMEngine, architecture_key

    settings = dict(node.get("vllm") or {})
    if settings.get("max_model_len") is None:
        settings["max_model_len"] = max_length
    key = architecture_key(model, settings)
    if key not in _VLLM:
        if not _VLLM:
            from .. import distributed

            distributed.before_teardown(close_engines)
        _VLLM[key] = VLLMEngine(model, settings)
    return _VLLM[key]


def close_engines() -> None:
    """Shut every vLLM engine of this process down (before the process group it joined is destroyed)."""
    while _VLLM:
        _VLLM.popitem()[1].close()
