"""Two runs of one config and seed on the CPU give bit-identical weights, for every trainable stage:
everything random (score and value heads, dropout, samplers, rollouts) is seeded before it exists."""

from __future__ import annotations

import pytest
from reliability_faults import RESUMABLE, stage_args, with_overrides
from reliability_harness import max_difference, run_inprocess

SHORT = ["trainer.max_steps=1", "trainer.save_steps=1000"]  # no checkpoints: only the seeding is under test


@pytest.mark.parametrize("stage", list(RESUMABLE))
def test_same_config_and_seed_give_identical_weights(stage, reliability_root, tmp_path):
    _, fixtures = reliability_root
    args = with_overrides(stage_args(stage, fixtures), *([] if stage == "ppo" else SHORT))
    if stage == "ppo":
        args = with_overrides(args, "trainer.total_iterations=1", "trainer.save_every=0",
                              "stage.value_from=policy")  # a fresh value head: seeded too
    dirs = []
    for name in ("a", "b"):
        out = run_inprocess([*args, f"run_dir={tmp_path / name}"], tmp_path / "runs")
        assert out.code == 0, out.stderr[-3000:]
        dirs.append(tmp_path / name)
    for sub in ("model", "value"):
        if (dirs[0] / sub).is_dir():
            assert max_difference(dirs[0] / sub, dirs[1] / sub) == 0.0, sub
