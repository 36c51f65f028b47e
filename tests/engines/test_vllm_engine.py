"""The colocated vLLM engine against HF generate on the same random-init Llama (head dim 64): greedy
decoding identical, sampled distributions alike, log-probs equal, and weights that follow the policy
(full and LoRA). One engine for the module (it starts in 20-50 s on CPU)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test` runs these in .venv-vllm")
pytestmark = pytest.mark.vllm

import torch  # noqa: E402

from rlhf.engines import HF, engine_for  # noqa: E402
from rlhf.sampling import token_logprobs  # noqa: E402

from .conftest import VLLM_SETTINGS  # noqa: E402

STOPS = list(range(2, 1500))  # many stop ids: responses of varied lengths from a random model


@pytest.fixture(scope="module")
def setup(llama64):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama64)
    model = AutoModelForCausalLM.from_pretrained(llama64, dtype=torch.float32)
    texts = ["Once upon a time", "The little dog", "She opened the door and", "In the garden there was",
             "Tom liked to", "The sun", "A big red ball", "One day, a bird"]
    prompts = [tok(t).input_ids for t in texts]
    return model, tok, prompts, engine_for(VLLM_SETTINGS, model)


def _gen(engine, model, tok, prompts, **kw):
    args = dict(pad_id=tok.pad_token_id, stop_ids=STOPS, max_new_tokens=24, seed=3)
    return engine.generate(model, prompts, **{**args, **kw})


def _mean_se(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.std() / math.sqrt(len(x)))


def test_greedy_decoding_is_identical(setup):
    model, tok, prompts, engine = setup
    a, b = _gen(engine, model, tok, prompts, greedy=True), _gen(HF, model, tok, prompts, greedy=True)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.response_mask, b.response_mask)
    assert torch.equal(a.ended, b.ended) and a.ended.any() and a.sampler_logprobs is not None


def test_sampled_responses_have_the_same_distribution_and_log_probs(setup):
    model, tok, prompts, engine = setup
    kw = dict(num_samples=8, temperature=1.0, max_new_tokens=16)
    v, h = _gen(engine, model, tok, prompts, **kw), _gen(HF, model, tok, prompts, **kw)
    assert v.input_ids.shape[0] == h.input_ids.shape[0] == 64
    with torch.no_grad():
        lv, _ = token_logprobs(model, v)
        lh, _ = token_logprobs(model, h)
    m = v.response_mask.bool()
    assert (lv[m] - v.sampler_logprobs[m]).abs().max() < 1e-4  # vLLM's log-probs are the HF model's
    # per-sample mean log-prob per token and length: the two backends' means within 4 standard errors
    for fv, fh in (((lv * v.response_mask).sum(1) / v.response_mask.sum(1), (lh * h.response_mask).sum(1) / h.response_mask.sum(1)),
                   (v.response_mask.sum(1).float(), h.response_mask.sum(1).float())):
        (mv, sv), (mh, sh) = _mean_se(fv), _mean_se(fh)
        assert abs(mv - mh) < 4 * math.hypot(sv, sh) + 1e-6, (mv, mh, sv, sh)


def test_the_engine_takes_the_policy_weights_after_an_optimizer_step(setup):
    import copy

    model, tok, prompts, engine = setup
    policy = copy.deepcopy(model)
    first = _gen(engine, policy, tok, prompts, num_samples=2)
    syncs = engine.syncs
    _gen(engine, policy, tok, prompts, num_samples=2)
    assert engine.syncs == syncs  # unchanged weights: no reload
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    for _ in range(3):  # push the policy towards its own first samples' opposite: a real change
        opt.zero_grad()
        lp, _ = token_logprobs(policy, first)
        (lp * first.response_mask).sum().backward()
        opt.step()
    after = _gen(engine, policy, tok, prompts, num_samples=2)
    assert engine.syncs == syncs + 1
    with torch.no_grad():
        new, _ = token_logprobs(policy, after)
        old, _ = token_logprobs(model, after)
    m = after.response_mask.bool()
    assert (new[m] - after.sampler_logprobs[m]).abs().max() < 1e-4  # sampled by the updated weights
    assert (old[m] - after.sampler_logprobs[m]).abs().max() > 1e-2  # not by the old ones
    assert not torch.equal(first.input_ids, after.input_ids)


def test_a_lora_policy_is_sampled_with_merged_weights_and_its_reference_without(setup):
    import copy

    from peft import LoraConfig, get_peft_model

    model, tok, prompts, engine = setup
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    with_adapter = _gen(engine, peft_model, tok, prompts, num_samples=2)
    with peft_model.disable_adapter():
        without = _gen(engine, peft_model, tok, prompts, num_samples=2)
    with torch.no_grad():
        lp_adapter, _ = token_logprobs(peft_model, with_adapter)
        lp_base, _ = token_logprobs(model, without)
        lp_base_on_adapter, _ = token_logprobs(model, with_adapter)
    m, n = with_adapter.response_mask.bool(), without.response_mask.bool()
    assert (lp_adapter[m] - with_adapter.sampler_logprobs[m]).abs().max() < 1e-4
    assert (lp_base[n] - without.sampler_logprobs[n]).abs().max() < 1e-4
    assert (lp_base_on_adapter[m] - with_adapter.sampler_logprobs[m]).abs().max() > 1e-2
