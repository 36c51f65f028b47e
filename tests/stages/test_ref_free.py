"""SimPO and ORPO train on the real stories260k model through TRL's DPOTrainer with no reference model."""

from __future__ import annotations

import pytest

from rlhf.runner import run_stage as run

QUIET = ["logger=none", "trainer.save_strategy=no", "trainer.logging_steps=1"]


@pytest.mark.parametrize("stage", ["simpo", "orpo"])
def test_reference_free_stage_loads_no_reference(stage, compose, tmp_path, monkeypatch):
    import trl.trainer.dpo_trainer as dpo_trainer

    import rlhf.models

    loaded = []
    for mod, name in ((dpo_trainer, "create_model_from_path"), (rlhf.models, "load_frozen_policy")):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _real=real, _name=name, **k: loaded.append(_name) or _real(*a, **k))
    cfg = compose(*QUIET, f"stage={stage}", "debug=smoke", "data.max_rows=120", "model.max_length=256",
                  "trainer.max_steps=3", "trainer.learning_rate=1e-3", "evaluation.enabled=false")
    m = run(cfg, tmp_path / stage).metrics
    assert loaded == [] and m["reference_in_memory"] is False
    assert m["rows"]["trained"] == m["train_rows"] > 0 and m["objective"] == stage
    assert m["eval_margin"] != m["eval_before_margin"]  # the loss moved the policy

    from rlhf.stages.check import memory_report

    source = str(cfg.model.name_or_path)
    assert memory_report(cfg, source)["reference_model"] is False  # `rlhf check` shows no reference copy
    assert memory_report(compose("stage=dpo"), source)["reference_model"] is True


def test_reference_options_are_refused(compose):
    from rlhf.errors import UserError
    from rlhf.runner import validate

    with pytest.raises(UserError, match="simpo has no reference model"):
        validate(compose("stage=simpo", "+trainer.precompute_ref_log_probs=true"))
    with pytest.raises(UserError, match="SimPO needs its target margin"):
        validate(compose("stage=simpo", "stage.gamma_beta_ratio=null"))
    with pytest.raises(UserError, match="ORPO has none"):
        validate(compose("stage=orpo", "stage.gamma_beta_ratio=0.5"))
