"""The PPO loop on the real stories260k model: it learns, it resumes exactly, LoRA keeps one model."""

from __future__ import annotations

import gc

import pytest
import torch

from rlhf.judges import vader
from rlhf.ppo import PPOConfig, PPOTrainer, ValueModel, last_checkpoint

PROMPTS = ["Once upon a time, there was a little girl.", "Tom had a big red ball.", "The dog ran to the park.",
           "Lily saw a bird in the sky."] * 8


@pytest.fixture(scope="module")
def parts(assets):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    src = assets / "models" / "stories260k"
    tok = AutoTokenizer.from_pretrained(src)
    tok.pad_token = tok.pad_token or tok.unk_token

    def make(lora: bool = False):
        torch.manual_seed(0)
        policy = AutoModelForCausalLM.from_pretrained(src)
        if lora:
            from peft import LoraConfig, get_peft_model

            policy = get_peft_model(policy, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                       task_type="CAUSAL_LM"))
        seq = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1)
        seq.config.pad_token_id = tok.pad_token_id
        ref = None if lora else AutoModelForCausalLM.from_pretrained(src).eval().requires_grad_(False)
        return policy, ValueModel(seq), ref

    return tok, make


def _cfg(**kw):
    base = dict(total_iterations=6, rollout_batch_size=32, mini_batch_size=16, learning_rate=1e-3,
                max_new_tokens=24, kl_coef=0.01, kl_control="fixed", save_every=0)
    return PPOConfig(**{**base, **kw})


def test_a_few_iterations_raise_the_mean_reward(parts):
    tok, make = parts
    policy, value, ref = make()
    history = PPOTrainer(_cfg(), policy, value, tok, vader, PROMPTS, reference=ref).train(progress=False)
    scores = [h["objective/scores"] for h in history]
    assert history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # policy = reference at the start
    assert sum(scores[-2:]) / 2 > sum(scores[:2]) / 2 + 0.15, scores
    for name in ("objective/kl", "objective/rlhf_reward", "objective/entropy", "policy/approxkl", "policy/clipfrac",
                 "loss/policy", "loss/value", "val/explained_variance", "kl_coef", "response_length",
                 "tokens_per_s/rollout", "tokens_per_s/train"):
        assert all(name in h for h in history), name


def test_lora_ppo_keeps_no_second_copy_of_the_policy(parts):
    from transformers import PreTrainedModel

    tok, make = parts
    policy, value, ref = make(lora=True)
    assert ref is None
    trainer = PPOTrainer(_cfg(total_iterations=2, learning_rate=5e-3), policy, value, tok, vader, PROMPTS)
    history = trainer.train(progress=False)
    gc.collect()
    live = [o for o in gc.get_objects() if isinstance(o, PreTrainedModel) and "CausalLM" in type(o).__name__]
    assert trainer.ref_model is None and len(live) == 1, [type(o).__name__ for o in live]
    assert history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # B = 0: adapter off = adapter on
    assert history[1]["objective/kl"] != pytest.approx(0.0, abs=1e-4)  # reference = adapter disabled, not policy
    base_weights = [p for n, p in policy.named_parameters() if "lora" not in n]
    assert base_weights and not any(p.requires_grad for p in base_weights)


def test_resume_from_a_checkpoint_continues_the_same_run(parts, tmp_path):
    tok, make = parts
    cfg = _cfg(total_iterations=4, save_every=2, rollout_batch_size=16, mini_batch_size=8, max_new_tokens=12)
    policy, value, ref = make()
    straight = PPOTrainer(cfg, policy, value, tok, vader, PROMPTS, reference=ref, output_dir=tmp_path)
    full = straight.train(progress=False)
    ckpt = last_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "iter-2" and not list((tmp_path / "checkpoints").glob(".*"))

    policy2, value2, ref2 = make()
    resumed = PPOTrainer(cfg, policy2, value2, tok, vader, PROMPTS, reference=ref2, output_dir=tmp_path / "b")
    resumed.load_checkpoint(ckpt)
    assert resumed.iteration == 2 and len(resumed.history) == 2
    tail = resumed.train(progress=False)
    assert len(tail) == 4
    for a, b in zip(full[2:], tail[2:], strict=True):
        assert b["objective/scores"] == pytest.approx(a["objective/scores"], abs=1e-5)
        assert b["objective/kl"] == pytest.approx(a["objective/kl"], abs=1e-4)
        assert b["kl_coef"] == pytest.approx(a["kl_coef"])
    for p, q in zip(policy.parameters(), policy2.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="multiple of mini_batch_size"):
        PPOConfig(rollout_batch_size=10, mini_batch_size=4)
    with pytest.raises(ValueError, match="k1 or k3"):
        PPOConfig(kl_estimator="k2")
