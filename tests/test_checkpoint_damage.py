"""A damaged newest checkpoint (rlhf.run.resume.damaged_file): named, moved to damaged-checkpoints/, and the
newest intact one is resumed: TRL's checkpoint-N and our PPO's iter-N, on real safetensors / torch files."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from rlhf.ppo.trainer import last_checkpoint
from rlhf.run.resume import damaged_file, last_complete_checkpoint


def _trl_checkpoint(root, step):
    d = root / "checkpoints" / f"checkpoint-{step}"
    d.mkdir(parents=True)
    save_file({"w": torch.arange(4096, dtype=torch.float32)}, str(d / "model.safetensors"))
    torch.save({"state": {}}, d / "optimizer.pt")
    torch.save({"rng": 1}, d / "rng_state.pth")
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return d


def _cut(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_truncated_newest_trl_checkpoint_is_set_aside_and_the_older_one_resumed(tmp_path):
    _trl_checkpoint(tmp_path, 2)
    newest = _trl_checkpoint(tmp_path, 4)
    assert damaged_file(newest) is None
    _cut(newest / "model.safetensors")
    assert "model.safetensors is damaged: truncated" in damaged_file(newest)
    assert last_complete_checkpoint(tmp_path / "checkpoints").name == "checkpoint-2"
    assert (tmp_path / "damaged-checkpoints" / "checkpoint-4" / "model.safetensors").is_file()  # kept, not deleted


def test_a_truncated_optimizer_state_counts_as_damaged_too(tmp_path):
    newest = _trl_checkpoint(tmp_path, 2)
    _cut(newest / "optimizer.pt")
    assert "optimizer.pt is damaged" in damaged_file(newest)
    assert last_complete_checkpoint(tmp_path / "checkpoints") is None  # none intact: the run starts over


def test_ppo_resumes_from_the_newest_intact_iteration(tmp_path):
    for it in (2, 4):
        d = tmp_path / "checkpoints" / f"iter-{it}"
        d.mkdir(parents=True)
        torch.save({"policy": {"w": torch.zeros(4096)}}, d / "state.pt")
        (d / "trainer_state.json").write_text(json.dumps({"iteration": it}))
    _cut(tmp_path / "checkpoints" / "iter-4" / "state.pt")
    assert last_checkpoint(tmp_path).name == "iter-2"
    assert (tmp_path / "damaged-checkpoints" / "iter-4").is_dir()
