"""generation=vllm through the stages, in one process (one engine for all of them): PPO (rollouts,
weight sync, TIS statistics, curves, final evaluation), stage=eval with both backends agreeing within sampling
noise, stage=generate with best-of-n, and TRL's GRPO with `use_vllm` colocated."""

from __future__ import annotations

import json
import math
from statistics import mean, stdev

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test` runs these in .venv-vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

from rlhf.runner import run_stage as run  # noqa: E402

from .conftest import VLLM_OVERRIDES  # noqa: E402

QUIET = ["logger=none", "debug=smoke", "evaluation.max_prompts=8", "evaluation.generation.max_new_tokens=16",
         "evaluation.judge=vader", "model.add_bos=false", "model.max_length=128"]


@pytest.fixture(scope="module")
def ppo_run(llama64, tmp_path_factory, compose_any):
    root = tmp_path_factory.mktemp("vllm-stages")
    art = run(compose_any("stage=ppo", *QUIET, *VLLM_OVERRIDES, f"model.name_or_path={llama64}", "stage.judge=vader",
                          "stage.value_from=policy", "evaluation.every_steps=1", "evaluation.curve_prompts=4"),
              root / "ppo")
    return root, art


def test_ppo_samples_with_vllm_and_corrects_the_mismatch(ppo_run):
    root, art = ppo_run
    history = json.loads((root / "ppo" / "ppo_history.json").read_text())
    assert len(history) == 2
    for h in history:  # float32 engine and trainer: the same distribution up to kernel rounding
        assert 0 <= h["rollout/logprob_diff_mean"] < 1e-4 and h["rollout/logprob_diff_max"] < 1e-3
        assert h["rollout/is_clipped_share"] == 0 and h["rollout/is_weight_mean"] == pytest.approx(1, abs=1e-3)
    assert "kl" in art.metrics["policy_eval"] and (root / "ppo" / "eval.json").is_file()
    curve = art.metrics["policy_eval_curve"]  # the curves sample with the same engine, after each iteration
    assert [p["step"] for p in curve] == [1, 2] and curve[0]["kl"] != curve[1]["kl"]


def test_eval_agrees_between_backends_within_sampling_noise(ppo_run, llama64, compose_any):
    root, _ = ppo_run
    out = {}
    for backend in ("hf", "vllm"):
        gen = VLLM_OVERRIDES if backend == "vllm" else ["generation=hf"]
        run(compose_any("stage=eval", *QUIET, *gen, f"model.name_or_path={llama64}", f"model.init_from={root / 'ppo'}",
                        "evaluation.max_prompts=16",
                        "evaluation.generation.num_samples=4"), root / f"eval-{backend}")
        out[backend] = json.loads((root / f"eval-{backend}" / "eval.json").read_text())["per_sample"]
    for key in ("kl", "policy_len", "gold_policy"):
        a, b = out["hf"][key], out["vllm"][key]
        se = math.hypot(stdev(a) / math.sqrt(len(a)), stdev(b) / math.sqrt(len(b)))
        assert abs(mean(a) - mean(b)) <= 4 * se + 1e-6, (key, mean(a), mean(b), se)


def test_generate_best_of_n_with_vllm(llama64, tmp_path, compose_any):
    art = run(compose_any("stage=generate", *QUIET, *VLLM_OVERRIDES, f"model.name_or_path={llama64}",
                          "stage.judge=vader", "stage.output=best_of_n", "stage.num_prompts=4",
                          "stage.generation.max_new_tokens=12"), tmp_path / "gen")
    m = art.metrics
    assert m["samples"] == 4 * m["prompts"] and m["best_of_n"] == 4 and m["best_of_n_score"] >= m["single_sample_score"]


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_critic_free_stages_with_trls_colocated_vllm(llama64, tmp_path, compose_any, stage):
    run(compose_any(f"stage={stage}", *QUIET, *VLLM_OVERRIDES, f"model.name_or_path={llama64}",
                    "stage.reward_funcs=[vader]", "trainer.beta=0.0"), tmp_path / stage)
    assert (tmp_path / stage / "eval.json").is_file()
    if stage == "rloo":  # TRL 1.16's RLOO has no importance-sampling correction: it ran on vLLM, that is all
        return
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "history.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train/sampling/sampling_logp_difference/mean" in r]
    assert len(logged) == 2, rows  # TRL's importance-sampling correction was on; its metrics are in our history
    for r in logged:  # the policy's dtype reached vLLM (bf16 would differ by ~1e-3) and the sync is exact
        assert r["train/sampling/sampling_logp_difference/max"] < 1e-3
        assert r["train/sampling/importance_sampling_ratio/mean"] == pytest.approx(1, abs=1e-3)
