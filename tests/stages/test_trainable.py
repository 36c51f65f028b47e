"""Every trainable stage moves every trainable parameter (TRL's own test discipline): a stage that
silently trains nothing, or only part of the model, fails here."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from rlhf.runner import run_stage as run

QUIET = ["logger=none", "debug=smoke", "evaluation.enabled=false"]


def _changed(before: dict, after: dict, skip=()) -> list[str]:
    """Names of tensors in `before` that are NOT different in `after` (empty: all moved)."""
    return [k for k, v in before.items() if k in after and not any(s in k for s in skip) and torch.equal(v, after[k])]


@pytest.fixture(scope="module")
def sft(tmp_path_factory, compose_any):
    out = tmp_path_factory.mktemp("trainable") / "sft"
    run(compose_any(*QUIET, "trainer.learning_rate=1e-3"), out)
    return out


@pytest.fixture(scope="module")
def rm(sft, compose_any):
    out = sft.parent / "rm"
    run(compose_any(*QUIET, "stage=reward", f"model.init_from={sft}", "model.max_length=64",
                    "trainer.learning_rate=1e-3"), out)
    return out


def test_sft_moves_every_parameter(sft, assets):
    base = load_file(str(assets / "models/stories260k/model.safetensors"))
    assert not _changed(base, load_file(str(sft / "model/model.safetensors")))


def test_reward_moves_every_parameter(sft, rm):
    before = load_file(str(sft / "model/model.safetensors"))
    after = load_file(str(rm / "model/model.safetensors"))
    assert "score.weight" in after and not _changed(before, after, skip=("lm_head",))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["dpo", "grpo", "rloo", "ppo"])
def test_policy_stages_move_every_parameter(stage, sft, rm, compose, tmp_path):
    extra = {"dpo": ["data=generated", "data.source=PAIRS", "model.max_length=64", "trainer.beta=0.1"],
             "grpo": ["stage.reward_funcs=[length]"], "rloo": ["stage.reward_funcs=[length]"],
             "ppo": [f"stage.reward_model={rm}"]}[stage]
    if stage == "dpo":  # pairs the policy has not seen: each step moves every weight
        import json

        pairs = tmp_path / "pairs.jsonl"
        pairs.write_text("".join(json.dumps({"prompt": f"Tom had {i} balls.", "chosen": " He was happy.",
                                             "rejected": " He was sad and cried."}) + "\n" for i in range(40)))
        extra = [e.replace("PAIRS", str(pairs)) for e in extra]
    run(compose(*QUIET, f"stage={stage}", f"model.init_from={sft}", "trainer.learning_rate=1e-3", *extra),
        tmp_path / stage)
    before = load_file(str(sft / "model/model.safetensors"))
    assert not _changed(before, load_file(str(tmp_path / stage / "model/model.safetensors")))
    if stage == "ppo":
        value_before = load_file(str(rm / "model/model.safetensors"))
        assert not _changed(value_before, load_file(str(tmp_path / "ppo/value/model.safetensors")))
