"""`generation:` validated before any model loads (runs without vLLM: the main suite)."""

from __future__ import annotations

import pytest

from rlhf.engines import versions
from rlhf.errors import UserError
from rlhf.runner import validate


def test_vllm_with_stories260k_is_refused_naming_the_supported_head_dims(cli):
    r = cli("generation=vllm", "stage=generate", "stage.judge=vader", "logger=none")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "dimension 8;" in r.stderr and "32, 64, 80, 96, 112, 128" in r.stderr


def test_untested_versions_are_refused_naming_the_tested_ones(monkeypatch):
    have = {"vllm": "0.31.0", "trl": "1.16.0", "transformers": "5.25.0"}
    monkeypatch.setattr(versions, "installed", lambda name: have[name])
    assert versions.version_problems() == []
    have["vllm"] = "0.33.1"
    (msg,) = versions.version_problems()
    assert "vllm 0.33.1" in msg and "vllm 0.31.x, trl 1.16.x, transformers 5.25.x" in msg
    with pytest.raises(UserError, match="untested"):
        versions.require_tested()
    have["vllm"] = None
    assert "not installed" in versions.version_problems()[0]


def test_generation_typos_and_trls_own_switch_are_refused(compose):
    with pytest.raises(UserError) as e:
        validate(compose("stage=grpo", "debug=smoke", "stage.reward_funcs=[vader]", "+generation.vllm.kv_cache_bytes=1",
                         "generation.backend=vlm", "+trainer.use_vllm=true"))
    text = str(e.value)
    assert "generation.vllm.kv_cache_bytes: unknown option (did you mean `kv_cache_memory_bytes`?)" in text
    assert "generation.backend: 'vlm' (str) is not one of hf, vllm" in text
    assert "trainer.use_vllm: set generation=vllm instead" in text


def test_vllm_launch_shapes_refused_only_where_untested(compose, monkeypatch):
    """ZeRO-3 in one process is allowed for our samplers; TRL's GRPO path under DeepSpeed and rank-0-only
    stages under a launcher are refused, each naming why. (stories260k's head dimension is always
    refused too: every call raises, and the launch problems are read beside it.)"""
    def problems(*overrides) -> str:
        with pytest.raises(UserError) as e:
            validate(compose("debug=smoke", "generation=vllm", *overrides))
        return " ".join(e.value.problems)

    monkeypatch.setattr(versions, "installed", lambda name: {"vllm": "0.31.0", "trl": "1.16.0",
                                                             "transformers": "5.25.0"}[name])
    assert "several processes" not in problems("stage=ppo", "deepspeed=zero3", "stage.judge=vader")
    assert "TRL's own vLLM path" in problems("stage=grpo", "deepspeed=zero3", "stage.reward_funcs=[vader]")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as a launcher exports it
    assert "several processes" not in problems("stage=ppo", "stage.judge=vader")
    assert "rank 0 evaluates alone" in problems("stage=eval", "evaluation.judge=vader")
