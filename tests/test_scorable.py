"""A reward model that cannot score the policy's text is refused before any model loads
(rlhf/run/scorable.py): from tokenizer files only, for a run and for every step of a pipeline.

The artifacts here hold tokenizers (and, for the policy, stories260k's own files) but no trained
weights: the check never reads weights, so none are needed. The GPT-2 tokenizer asset and
stories260k's Llama tokenizer both round-trip each other's text (byte-level BPE, SentencePiece with
byte fallback): a different vocabulary alone is accepted; what fails is a reward model too short for
the responses, one whose vocabulary maps the policy's text to unknown, or one without a chat
template for conversations."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rlhf.errors import UserError
from rlhf.run.artifacts import Artifact, write_artifact
from rlhf.runner import validate


def _policy(run_dir: Path, assets: Path) -> Path:
    """stories260k as a policy artifact (an SFT run that has not moved it)."""
    shutil.copytree(assets / "models" / "stories260k", run_dir / "model")
    write_artifact(run_dir, Artifact(stage="sft", kind="policy", model_dir="model", tokenizer_dir="model",
                                     base_model=str(assets / "models" / "stories260k")))
    return run_dir


def _reward(run_dir: Path, tokenizer, max_length: int, **extra) -> Path:
    """A reward artifact's manifest and tokenizer files, trained at `max_length` tokens."""
    tokenizer.save_pretrained(run_dir / "model")
    write_artifact(run_dir, Artifact(stage="reward", kind="reward", model_dir="model", tokenizer_dir="model",
                                     base_model="tiny", extra={"max_length": max_length, **extra}))
    return run_dir


def _gpt2(assets: Path):
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(assets / "tokenizers" / "gpt2")
    tok.add_special_tokens({"pad_token": "<pad>"})
    return tok


def _word_level():
    """A word-level tokenizer that knows 5 words: most of a story is <unk> to it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "[EOS]", "the", "a", "cat", "dog", "sat"])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")


@pytest.fixture
def demo(tmp_path, assets):
    """runs/demo/pipeline/sft as pipeline=iterative_dpo starts from it (its reward model: per test)."""
    d = tmp_path / "runs" / "demo" / "pipeline"
    _policy(d / "sft", assets)
    return d


def test_iterative_dpo_with_a_reward_model_too_short_for_its_responses_exits_2_before_a_model_loads(
        cli, demo, tmp_path, assets):
    _reward(demo / "reward", _gpt2(assets), max_length=16)
    res = cli("pipeline=iterative_dpo", "rounds=2", "logger=none")
    assert res.returncode == 2, res.stderr[-3000:]
    err = res.stderr
    assert "Traceback" not in err and "stage.reward_model" in err
    # round 1 samples from the SFT model; round 2 from round 1's DPO policy, which is not trained yet
    assert "step round1_generate" in err and "step round2_generate" in err
    assert str(demo / "reward") in err and str(demo / "sft") in err  # both run dirs
    assert "up to 48 policy tokens" in err and "max_length 16" in err  # what differs
    pdir = tmp_path / "runs" / "iterative_dpo" / "pipeline"
    assert not list(pdir.glob("*/artifact.json")) and not list(pdir.glob("*/config.yaml"))  # no step started


def test_a_reward_model_with_another_tokenizer_that_holds_the_text_is_accepted(compose, demo, assets):
    """GPT-2's vocabulary scoring stories260k's text: another tokenizer, not an error."""
    _reward(demo / "reward", _gpt2(assets), max_length=128)
    cfg = compose("stage=generate", f"model.init_from={demo / 'sft'}", f"stage.reward_model={demo / 'reward'}",
                  "stage.generation.max_new_tokens=48", f"evaluation.reward_model={demo / 'reward'}")
    validate(cfg)  # raises nothing
    validate(compose("stage=dpo", f"model.init_from={demo / 'sft'}", f"evaluation.reward_model={demo / 'reward'}"))


def test_a_vocabulary_that_maps_the_policy_text_to_unknown_is_refused(compose, demo, assets):
    _reward(demo / "words", _word_level(), max_length=512)
    cfg = compose("stage=dpo", f"model.init_from={demo / 'sft'}", f"evaluation.reward_model={demo / 'words'}")
    with pytest.raises(UserError, match=r"evaluation.reward_model: the reward model .*words cannot score the text "
                                        r"of the policy .*sft: its tokenizer \(8 tokens\) loses \d+ of the \d+ pieces"):
        validate(cfg)
    # an ensemble (rlhf.monitor.ensemble): each member is checked
    _reward(demo / "ens" / "members" / "1", _word_level(), max_length=512)
    _reward(demo / "ens", _gpt2(assets), max_length=512, ensemble=["members/1"])
    with pytest.raises(UserError, match=r"stage.reward_model \(member 0\): the reward model .*members/1 cannot"):
        validate(compose("stage=ppo", f"model.init_from={demo / 'sft'}", f"stage.reward_model={demo / 'ens'}",
                         "stage.value_from=policy"))
    # not the evaluation's to check when it is off
    validate(compose("stage=dpo", f"model.init_from={demo / 'sft'}", f"evaluation.reward_model={demo / 'words'}",
                     "evaluation.enabled=false"))


def test_conversations_need_a_reward_model_with_a_chat_template(compose, demo, assets):
    _reward(demo / "reward", _gpt2(assets), max_length=512)
    cfg = compose("stage=ppo", f"model.init_from={demo / 'sft'}", "model.chat_template=chatml", "data=hh_rlhf",
                  "data.conversational=true", f"stage.reward_model={demo / 'reward'}", "stage.value_from=policy")
    with pytest.raises(UserError, match="stage.reward_model: .*the prompts are conversations but the reward model "
                                        "has no chat template"):
        validate(cfg)


def test_a_pipeline_checks_a_reward_model_an_earlier_step_will_train(compose, tmp_path, assets):
    """The reward step has not run yet: its tokenizer is the one its `model:` node will load."""
    from rlhf.pipeline import planned_scoring_problems

    pdir = tmp_path / "p"
    steps = [("reward", compose("stage=reward", f"run_dir={pdir / 'reward'}", "model.max_length=16")),
             ("ppo", compose("stage=ppo", f"run_dir={pdir / 'ppo'}", f"stage.reward_model={pdir / 'reward'}",
                             "trainer.max_new_tokens=48", "stage.value_from=policy"))]
    (problem,) = planned_scoring_problems(steps)
    assert problem.startswith("step ppo: stage.reward_model:") and "max_length 16" in problem
    steps[0] = ("reward", compose("stage=reward", f"run_dir={pdir / 'reward'}", "model.max_length=128"))
    assert planned_scoring_problems(steps) == []
