"""Fixtures for the data layer tests: the embedded assets, the real tiny tokenizer, tiny bad files."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """../shared/assets beside the project root, or $RLHF_ASSETS_DIR."""
    default = Path(__file__).resolve().parents[2] / ".." / "shared" / "assets"
    path = Path(os.environ.get("RLHF_ASSETS_DIR", default)).resolve()
    assert path.is_dir(), f"embedded assets not found at {path} (set RLHF_ASSETS_DIR)"  # fail, never skip
    return path


@pytest.fixture(scope="session")
def tokenizer(assets_dir: Path) -> Any:
    """The real stories260k tokenizer (512-piece SentencePiece BPE, fast)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(assets_dir / "models" / "stories260k")


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """write_jsonl(rows, name="rows.jsonl") -> path; a str row is written as the raw line."""

    def write(rows: list[Any], name: str = "rows.jsonl") -> Path:
        path = tmp_path / name
        lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def chat_tokenizer(assets_dir: Path) -> Any:
    """stories260k's tokenizer as a stage loads it (pad, BOS) with the shipped ChatML template."""
    from omegaconf import OmegaConf

    from rlhf.models import load_tokenizer

    model = OmegaConf.create({"name_or_path": str(assets_dir / "models" / "stories260k"), "tokenizer": None,
                              "trust_remote_code": False, "revision": None, "pad_token": None, "add_bos": True,
                              "chat_template": "chatml"})
    return load_tokenizer(model)
