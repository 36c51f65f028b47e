"""TRL 1.16's GRPO loss variants through stage=grpo: unknown values refused at validation (with a
did-you-mean and the accepted values), the accepted ones the same as TRL's, and each variant trained
a few steps on stories260k (rlhf/stages/grpo_losses.py)."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from safetensors.torch import load_file

from rlhf.errors import UserError
from rlhf.runner import run_stage as run
from rlhf.stages.grpo_losses import IMPORTANCE_SAMPLING_LEVELS, LOSS_TYPES

QUIET = ["logger=none", "debug=smoke", "evaluation.enabled=false", "stage=grpo", "stage.reward_funcs=[length]"]


def test_accepted_values_are_trls():
    import dataclasses

    from trl import GRPOConfig

    fields = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    listed = fields["loss_type"].metadata["help"].split("Supported values are")[1].split(". ")[0]
    assert set(re.findall(r"'(\w+)'", listed)) == set(LOSS_TYPES)
    assert fields["loss_type"].default == "dapo" and fields["importance_sampling_level"].default == "token"
    assert set(re.findall(r"`'(\w+)'`", fields["importance_sampling_level"].metadata["help"])) \
        >= set(IMPORTANCE_SAMPLING_LEVELS)


def test_unknown_loss_type_and_level_are_refused_together(compose):
    from rlhf.runner import validate

    with pytest.raises(UserError) as e:
        validate(compose(*QUIET, "trainer.loss_type=dappo", "trainer.importance_sampling_level=sequense"))
    msg = e.value.message
    assert "trainer.loss_type: 'dappo'" in msg and "did you mean `dapo`" in msg and ", ".join(LOSS_TYPES) in msg
    assert "trainer.importance_sampling_level: 'sequense'" in msg and "did you mean `sequence`" in msg


def test_rloo_has_no_grpo_loss_types(compose):
    from rlhf.runner import validate

    with pytest.raises(UserError, match="trainer.loss_type: not an option of RLOOConfig"):
        validate(compose(*[q.replace("stage=grpo", "stage=rloo") for q in QUIET], "+trainer.loss_type=dapo"))


# what TRL logs for each variant's clipping (absent: sapo's soft gate logs none)
CLIP_METRIC = {"cispo": "cispo_clip_ratio", "vespo": "vespo/phi_seq_mean", "sapo": None}


@pytest.mark.slow
@pytest.mark.parametrize("loss_type,level", [(t, "sequence" if t == "luspo" else "token") for t in LOSS_TYPES]
                         + [("grpo", "sequence")])  # the last: GSPO
def test_each_grpo_loss_variant_trains(loss_type, level, compose, tmp_path, assets):
    out = tmp_path / "grpo"
    art = run(compose(*QUIET, f"trainer.loss_type={loss_type}", f"trainer.importance_sampling_level={level}",
                      "trainer.learning_rate=1e-3", "trainer.max_steps=1"), out)
    m = art.metrics
    assert (m["loss_type"], m["importance_sampling_level"]) == (loss_type, level)
    assert math.isfinite(m["train_loss"])
    steps = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    logged = set().union(*steps)
    clip = CLIP_METRIC.get(loss_type, "clip_ratio/region_mean")
    assert clip is None or any(k.endswith(clip) for k in logged), sorted(logged)
    base = load_file(str(assets / "models/stories260k/model.safetensors"))
    after = load_file(str(out / "model/model.safetensors"))
    assert any(not torch.equal(v, after[k]) for k, v in base.items() if k in after), "the policy did not move"
