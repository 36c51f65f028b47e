"""The artifacts every reliability test starts from, built once: a smoke SFT policy, a reward model
trained from it, and a reward model on another vocabulary (GPT-2's)."""

from __future__ import annotations

import pytest
from reliability_harness import build_foreign_rm, build_rm, build_sft


@pytest.fixture(scope="session")
def reliability_root(tmp_path_factory):
    """root/fixtures/{sft,rm,frm}: finished runs; root/runs: where the cases' own runs would go."""
    root = tmp_path_factory.mktemp("reliability")
    sft = build_sft(root / "fixtures" / "sft", root / "runs")
    rm = build_rm(root / "fixtures" / "rm", sft, root / "runs")
    frm = build_foreign_rm(root / "fixtures" / "frm")
    return root, {"sft": sft, "rm": rm, "frm": frm}
