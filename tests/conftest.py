"""Shared fixtures: the embedded assets, Hydra composition, an isolated runs dir, W&B offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"  # the source files (tests that list them); composition reads the installed rlhf.conf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def assets() -> Path:
    path = Path(os.environ.get("RLHF_ASSETS_DIR", ROOT.parent / "shared" / "assets")).resolve()
    assert (path / "models" / "stories260k").is_dir(), f"embedded assets not found at {path}"
    return path


def _hydra_compose(*overrides: str, return_hydra_config: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from rlhf.cli import register_resolvers
    from rlhf.resources import CONFIG_MODULE

    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def compose_any():
    """compose(*overrides) for module- and session-scoped fixtures (runs go where run_dir says)."""
    return _hydra_compose


@pytest.fixture()
def compose(tmp_path, monkeypatch):
    """compose(*overrides) -> the config exactly as `rlhf` would build it (runs go to tmp_path)."""
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return _hydra_compose


@pytest.fixture()
def cli(tmp_path):
    """Run the real `rlhf` console script in a subprocess; returns CompletedProcess."""
    import subprocess
    import sys

    def _run(*args: str, env: dict | None = None, timeout: int = 600):
        e = {**os.environ, "RLHF_RUNS_DIR": str(tmp_path / "runs"), "WANDB_MODE": "offline", **(env or {})}
        e.pop("WANDB_API_KEY", None)
        exe = Path(sys.executable).parent / "rlhf"
        return subprocess.run([str(exe), *args], capture_output=True, text=True, env=e, timeout=timeout,
                              cwd=tmp_path)

    return _run
