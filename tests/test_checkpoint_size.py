"""`rlhf check`'s parameter counts from safetensors headers equal those of the model built on the
meta device (rlhf/checkpoint_size.py vs rlhf.memory.size_from_config), without building it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict

import pytest
from omegaconf import OmegaConf

from rlhf.checkpoint_size import count
from rlhf.memory import size_from_config
from rlhf.stages import stage_module

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
NONE = OmegaConf.create({"method": "none"})
LORA = OmegaConf.create({"method": "lora", "lora": {"r": 8, "target_modules": TARGETS}})


@pytest.fixture(scope="module")
def qwen_untied(tmp_path_factory):
    """A tiny random Qwen2 with an untied LM head, saved in two safetensors shards."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    path = tmp_path_factory.mktemp("qwen")
    Qwen2ForCausalLM(config).save_pretrained(path, max_shard_size="20KB")
    assert (path / "model.safetensors.index.json").is_file()
    return path


@pytest.mark.parametrize("stage", ["sft", "reward", "dpo"])
@pytest.mark.parametrize("peft", [NONE, LORA], ids=["full", "lora"])
@pytest.mark.parametrize("which", ["stories260k", "qwen_untied"])
def test_header_counts_equal_the_meta_device_build(stage, peft, which, assets, request):
    from transformers import AutoConfig

    path = assets / "models" / "stories260k" if which == "stories260k" else request.getfixturevalue(which)
    lora = None if peft.method == "none" else {"r": 8, "target_modules": TARGETS}
    model = stage_module(stage).FACTS.model  # what the stage builds: a causal LM or a score model
    quick = count(path, model, lora)
    built = asdict(size_from_config(AutoConfig.from_pretrained(path), "m", "float32", peft, model))
    assert quick is not None
    assert {k: quick[k] for k in ("architecture", "params", "trainable", "largest_layer")} == \
        {k: built[k] for k in ("architecture", "params", "trainable", "largest_layer")}


def test_unknown_layouts_fall_back_to_the_model_builder(tmp_path, assets):
    assert count(tmp_path, "causal", None) is None  # no config.json: a hub id, say
    assert count(assets / "models" / "stories260k", "causal", None, trust_remote_code=True) is None
    assert count(assets / "models" / "stories260k", "causal", {"r": 8, "target_modules": "all-linear"}) is None


def test_model_size_of_a_local_llama_imports_no_modeling_code(assets):
    """The point of the header path: `rlhf check` does not import transformers' modeling stack."""
    code = (
        "import sys; from omegaconf import OmegaConf; from rlhf.memory import model_size\n"
        f"m = OmegaConf.create({{'name_or_path': '{assets}/models/stories260k', 'dtype': 'float32', "
        "'trust_remote_code': False, 'revision': None})\n"
        "s = model_size(m.name_or_path, m, OmegaConf.create({'method': 'none'}), 'score')\n"
        "assert s.params == 260_032 + 64, s  # the tied LM head is the embedding; a 64 -> 1 score head\n"
        "assert 'transformers.modeling_utils' not in sys.modules, 'built the model'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
