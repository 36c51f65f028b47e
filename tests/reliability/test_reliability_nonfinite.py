"""A non-finite loss or gradient stops a run at that step (or skips it, when asked); nothing with
non-finite weights is ever published; metrics and manifests are strict JSON."""

from __future__ import annotations

import json
import math

import pytest
from reliability_harness import CASES, QUIET, poison, run_inprocess


def _strict(path):
    def refuse(token):
        raise ValueError(f"bare {token} in {path}")
    return json.loads(path.read_text(), parse_constant=refuse)


def _assert_failed_not_published(run, out):
    assert out.code == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert not (run / "artifact.json").exists() and not (run / "metrics.json").exists()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "diverged" in status["error"]


def test_sft_at_a_huge_learning_rate_stops_at_the_first_non_finite_step(tmp_path):
    run = tmp_path / "run"
    out = run_inprocess([*QUIET, "trainer.learning_rate=1e6", "trainer.max_steps=8", f"run_dir={run}"], tmp_path / "runs")
    _assert_failed_not_published(run, out)
    msg = out.stderr
    assert "training diverged at step" in msg and " of 8: " in msg and "nan" in msg
    assert "trainer.learning_rate=1e+06" in msg  # the likely cause, with the value to change


def test_dpo_at_a_huge_learning_rate_is_never_published(reliability_root, tmp_path):
    _, fx = reliability_root
    run = tmp_path / "run"
    out = run_inprocess([*QUIET, "stage=dpo", f"model.init_from={fx['sft']}", "data=jsonl", "data.kind=pair",
                         f"data.source={CASES}/pairs_good.jsonl", "evaluation.enabled=false",
                         "trainer.learning_rate=1e3", "trainer.max_steps=8", f"run_dir={run}"], tmp_path / "runs")
    _assert_failed_not_published(run, out)


def test_ppo_at_a_huge_learning_rate_stops(reliability_root, tmp_path):
    _, fx = reliability_root
    run = tmp_path / "run"
    out = run_inprocess([*QUIET, "stage=ppo", f"model.init_from={fx['sft']}", f"stage.reward_model={fx['rm']}",
                         "evaluation.enabled=false", "trainer.learning_rate=1e6", "trainer.total_iterations=3",
                         f"run_dir={run}"], tmp_path / "runs")
    _assert_failed_not_published(run, out)
    assert "iteration" in out.stderr and "optimizer step" in out.stderr


def test_skip_counts_skipped_steps_and_stops_after_n_in_a_row(tmp_path):
    """nonfinite.policy=skip at a learning rate that never recovers: two skipped steps in a row stop
    the run; the logged loss of a skipped step reads nan (transformers' NaN filter is off), not 0."""
    run = tmp_path / "run"
    out = run_inprocess([*QUIET, "trainer.learning_rate=1e6", "trainer.max_steps=8", "nonfinite.policy=skip",
                         "nonfinite.max_consecutive=2", f"run_dir={run}"], tmp_path / "runs")
    _assert_failed_not_published(run, out)
    assert "2 optimizer steps in a row were not finite" in out.stderr
    assert "'grad_norm': 'nan'" in out.stdout or "'loss': 'nan'" in out.stdout


def test_skip_lets_a_ppo_run_through_one_bad_batch(reliability_root, tmp_path):
    """A judge that scores NaN once: under skip, the two optimizer steps of that iteration are skipped
    (counted in metrics.json), the run goes on and publishes all-finite weights."""
    import reliability_nan_judge as nan_judge

    _, fx = reliability_root
    nan_judge.CALLS["n"] = 0
    run = tmp_path / "run"
    out = run_inprocess([*QUIET, "stage=ppo", f"model.init_from={fx['sft']}", "stage.judge=reliability_nan_judge.nan_once",
                         "stage.value_from=policy", "evaluation.enabled=false", "nonfinite.policy=skip",
                         "nonfinite.max_consecutive=3", f"run_dir={run}"], tmp_path / "runs")
    assert out.code == 0, out.stderr[-3000:]
    metrics = _strict(run / "metrics.json")
    assert metrics["nonfinite_skipped_steps"] == 2 and metrics["iterations"] == 2
    history = _strict(run / "ppo_history.json")
    assert history[0]["objective/scores"] is None and history[1]["objective/scores"] is not None  # NaN -> null


def test_finish_refuses_to_publish_non_finite_weights(reliability_root, compose, tmp_path):
    """The last line of defence, whatever the training did: `common.finish` checks what it saved."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.errors import RunFailed
    from rlhf.stages import common

    _, fx = reliability_root
    model = AutoModelForCausalLM.from_pretrained(fx["sft"] / "model")
    tok = AutoTokenizer.from_pretrained(fx["sft"] / "model")
    with torch.no_grad():
        model.model.norm.weight[0] = math.inf
    run = tmp_path / "run"
    rd, ctx = common.start(compose(*QUIET), run)
    with pytest.raises(RunFailed, match="tensors hold NaN or inf"), rd:
        common.finish(ctx, kind="policy", model=model, tokenizer=tok, metrics={"loss": math.nan})
    assert not (run / "artifact.json").exists()
    assert json.loads((run / "status.json").read_text())["status"] == "failed"


def test_metrics_and_manifest_are_strict_json(tmp_path):
    from rlhf.run.artifacts import Artifact, RunDir, write_artifact

    run = tmp_path / "run"
    with RunDir(run):
        write_artifact(run, Artifact(stage="eval", kind="eval", model_dir=None, tokenizer_dir=None, base_model="b",
                                     metrics={"kl": math.nan, "nested": {"x": [math.inf, 1.0]}}))
    assert _strict(run / "metrics.json") == {"kl": None, "nested": {"x": [None, 1.0]}}
    assert _strict(run / "artifact.json")["metrics"]["kl"] is None


def test_a_poisoned_artifact_is_refused_by_every_stage_that_would_load_it(reliability_root, tmp_path):
    import shutil

    from rlhf.errors import UserError
    from rlhf.run.artifacts import read_artifact

    _, fx = reliability_root
    run = shutil.copytree(fx["rm"], tmp_path / "rm", ignore=shutil.ignore_patterns(".rlhf.lock"))
    read_artifact(run, expect_kinds=("reward",))  # fine before
    poison(run / "model")
    with pytest.raises(UserError, match="non-finite weights"):
        read_artifact(run, expect_kinds=("reward",), what="stage.reward_model")
