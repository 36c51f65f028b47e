"""Tokens the model can see (issue 21; /work/shared/cases/trust-3/tokens-and-templates): pad is never
EOS, a reward head sees the EOS its sequence is framed with, exactly one BOS in every encoded sequence."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rlhf.data import PreferenceEncoder, PromptEncoder, RewardEncoder, SFTEncoder
from rlhf.errors import UserError
from rlhf.models import build_reward_model, load_tokenizer

CASE = Path(__file__).resolve().parents[1] / ".." / "shared" / "cases" / "trust-3" / "tokens-and-templates"


def _model_cfg(path, **kw):
    return OmegaConf.create({"name_or_path": str(path), "init_from": None, "tokenizer": None, "revision": None,
                             "trust_remote_code": False, "dtype": "float32", "attn_implementation": "sdpa",
                             "add_bos": False, "pad_token": None, "freeze_layers": 0, "max_length": 128,
                             "chat_template": None, **kw})


def _script(name, cwd, *args, assets):
    """Run the case's build script as it is, in this process (a subprocess would import torch again)."""
    import contextlib
    import io
    import runpy

    old = (os.getcwd(), sys.argv, os.environ.get("RLHF_ASSETS_DIR"))
    os.chdir(cwd)
    sys.argv = [name, *args]
    os.environ["RLHF_ASSETS_DIR"] = str(assets)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str((CASE / name).resolve()), run_name="__main__")
    finally:
        os.chdir(old[0])
        sys.argv = old[1]
        if old[2] is None:
            os.environ.pop("RLHF_ASSETS_DIR")
        else:
            os.environ["RLHF_ASSETS_DIR"] = old[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory, assets):
    """The case's models: gpt2tiny (unk = bos = eos, no pad), gpt2tiny without unk, stories260k-chat."""
    d = tmp_path_factory.mktemp("tokens")
    _script("make_gpt2_tiny.py", d, "gpt2tiny", assets=assets)
    _script("make_gpt2_tiny.py", d, "gpt2tiny-nounk", "--no-unk", assets=assets)
    _script("make_bos_template.py", d, assets=assets)
    return d


@pytest.mark.parametrize("name", ["gpt2tiny", "gpt2tiny-nounk"])
def test_a_gpt2_style_tokenizer_gets_a_pad_that_is_not_eos(built, name):
    tok = load_tokenizer(_model_cfg(built / name))
    assert tok.eos_token_id == 50256 and tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.pad_token == "<pad>" and len(tok) == 50258


def test_a_tokenizer_whose_own_pad_is_eos_gets_another(built, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built / "gpt2tiny")
    tok.pad_token = tok.eos_token  # what many model cards ship (and TRL's scripts used to do)
    tok.save_pretrained(tmp_path / "padeos")
    assert load_tokenizer(_model_cfg(built / "gpt2tiny", tokenizer=str(tmp_path / "padeos"))).pad_token == "<pad>"


def test_model_pad_token_set_to_eos_is_refused(built):
    with pytest.raises(UserError, match=r"model.pad_token: '<\|endoftext\|>' is the EOS token .* set "
                                        r"model.pad_token=null"):
        load_tokenizer(_model_cfg(built / "gpt2tiny", pad_token="<|endoftext|>"))


def test_a_reward_head_sees_the_eos_it_was_framed_with(built):
    """Before: [..., EOS] and [...] scored identically (0.035701 both), the EOS read as padding."""
    cfg = _model_cfg(built / "gpt2tiny")
    tok = load_tokenizer(cfg)
    model = build_reward_model(cfg, None, tok).eval()
    ids = RewardEncoder(tok, 64).encode_scored(["Q00: What color is the sky? A:"], [" Blue."])[0]
    assert ids[-1] == tok.eos_token_id
    padded = torch.tensor([ids + [tok.pad_token_id] * 3])
    with torch.no_grad():
        framed = model(torch.tensor([ids])).logits.item()
        without = model(torch.tensor([ids[:-1]])).logits.item()
        batch = model(padded, attention_mask=(padded != tok.pad_token_id).long()).logits.item()
    assert framed != pytest.approx(without, abs=1e-6) and batch == pytest.approx(framed, abs=1e-5)


def _rows(name, n=3):
    return [json.loads(line) for line in open(CASE / name)][:n]


def test_exactly_one_bos_in_every_encoder(built):
    """Text already rendered with a template that begins with {{ bos_token }} ("<s>[INST] ..."), plain text,
    and conversations through the template: one BOS, in the SFT, preference, reward and prompt encoders."""
    tok = load_tokenizer(_model_cfg(built / "stories260k-chat", add_bos=True))
    bos = tok.bos_token_id
    pairs = _rows("pairs_prerendered.jsonl") + [{"prompt": "Tell me a story.", "chosen": " A cat.",
                                                  "rejected": " A dog."}]
    turns = [{"role": "user", "content": "Tell me a story."}]
    conv_pair = {"prompt": turns, "chosen": [{"role": "assistant", "content": "A cat."}],
                 "rejected": [{"role": "assistant", "content": "A dog."}]}
    seqs = []
    for e in SFTEncoder(tok, 64).encode(_rows("sft_prerendered.jsonl") + [
            {"prompt": "<s>Once upon a time", "completion": " a cat."},
            {"messages": [*turns, {"role": "assistant", "content": "A cat."}]}]):
        seqs.append(e.features["input_ids"])
    for e in PreferenceEncoder(tok, 64).encode(pairs + [conv_pair]):
        seqs += [e.features["prompt_ids"] + e.features["chosen_ids"], e.features["prompt_ids"] + e.features["rejected_ids"]]
    for e in RewardEncoder(tok, 64).encode(pairs + [conv_pair]):
        seqs += [e.features["chosen_ids"], e.features["rejected_ids"]]
    seqs += [e.features["prompt_ids"] for e in PromptEncoder(tok, 64).encode(pairs + [{"prompt": turns}])]
    assert len(seqs) == 5 + 2 * 5 + 2 * 5 + 5
    for s in seqs:
        assert s[0] == bos and s.count(bos) == 1, s[:6]


def test_a_template_that_writes_a_literal_bos_gets_no_second_one(assets, tmp_path):
    jinja = tmp_path / "literal.jinja"
    jinja.write_text("<s>{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}"
                     "{% if add_generation_prompt %}[assistant]{% endif %}")
    tok = load_tokenizer(_model_cfg(assets / "models" / "stories260k", add_bos=True, chat_template=str(jinja)))
    ids = PromptEncoder(tok, 64).encode([{"prompt": [{"role": "user", "content": "Hi"}]}])[0].features["prompt_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


@pytest.mark.slow
def test_sft_on_a_gpt2_style_model_saves_a_pad_that_is_not_eos(built, compose, tmp_path):
    """The case's SFT run: exit 0 with pad = EOS = 50256 saved in the tokenizer and the model config."""
    from transformers import AutoConfig, AutoTokenizer

    from rlhf.runner import run_stage

    cfg = compose("stage=sft", f"model.name_or_path={built / 'gpt2tiny'}", "model.add_bos=false", "data=jsonl",
                  "data.kind=sft", f"data.source={(CASE / 'qa_pad_eos.jsonl').resolve()}", "debug=smoke", "logger=none")
    run_stage(cfg, tmp_path / "sft")
    tok = AutoTokenizer.from_pretrained(tmp_path / "sft" / "model")
    config = AutoConfig.from_pretrained(tmp_path / "sft" / "model")
    assert tok.pad_token_id == config.pad_token_id != tok.eos_token_id == 50256


def test_a_reward_encoder_refuses_a_tokenizer_that_pads_with_eos(built):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built / "gpt2tiny")
    tok.pad_token = tok.eos_token  # e.g. a reward artifact saved before pad != EOS
    with pytest.raises(UserError, match="its pad token is its EOS"):
        RewardEncoder(tok, 64)
