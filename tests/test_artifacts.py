"""Artifacts: atomic manifest, unfinished runs and wrong kinds refused with a clear message."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rlhf.errors import UserError
from rlhf.run.artifacts import Artifact, RunDir, read_artifact, write_artifact

STORIES = Path(os.environ.get("RLHF_ASSETS_DIR", Path(__file__).resolve().parents[2] / "shared" / "assets")) / \
    "models" / "stories260k"


def _finished(tmp_path, kind="reward"):
    d = tmp_path / "run"
    with RunDir(d):
        shutil.copytree(STORIES, d / "model")  # real files: a stage checks them before it loads them
        write_artifact(d, Artifact(stage="reward", kind=kind, model_dir="model", base_model="b", tokenizer_dir="model",
                                   metrics={"eval_accuracy": 0.7}))
    return d


def test_wrong_kind_is_refused(tmp_path):
    d = _finished(tmp_path, kind="reward")
    with pytest.raises(UserError) as e:
        read_artifact(d, expect_kinds=("policy",))
    assert "holds a reward model" in e.value.message and "needs a policy artifact" in e.value.message
    art = read_artifact(d, expect_kinds=("reward",))
    assert art.metrics["eval_accuracy"] == 0.7 and art.path(art.model_dir).is_dir()
    assert json.loads((d / "status.json").read_text())["status"] == "finished"
    assert json.loads((d / "metrics.json").read_text()) == {"eval_accuracy": 0.7}


def test_crashed_run_does_not_look_finished(tmp_path):
    d = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunDir(d):
            (d / "model").mkdir()
            raise RuntimeError("boom")
    assert not (d / "artifact.json").exists()
    with pytest.raises(UserError) as e:
        read_artifact(d)
    assert "did not finish" in e.value.message and "RuntimeError: boom" in e.value.message


def test_refused_run_leaves_nothing_and_finished_run_is_never_overwritten(tmp_path):
    d = tmp_path / "run"
    with pytest.raises(UserError):
        with RunDir(d):
            raise UserError("bad data")
    assert not d.exists()
    done = _finished(tmp_path)
    with pytest.raises(UserError) as e:
        RunDir(done)
    assert "already holds a finished run" in e.value.message


def test_missing_run_dir(tmp_path):
    with pytest.raises(UserError) as e:
        read_artifact(tmp_path / "nope")
    assert "does not exist" in e.value.message
