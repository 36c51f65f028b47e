"""The stage contract (rlhf/stages/__init__.py): every stage declares its facts, and a stage that lives
outside the package (a module + its YAML, nothing else) is validated, runs, is memory-estimated by
`rlhf check` and placed on the frontier by `rlhf report`."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest

from rlhf.errors import UserError
from rlhf.stages import CONTRACT, FACT_NAMES, STAGES, StageFacts, stage_module


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_registered_stage_declares_every_fact(name):
    mod = stage_module(name)
    assert all(hasattr(mod, k) for k in CONTRACT), [k for k in CONTRACT if not hasattr(mod, k)]
    assert isinstance(mod.FACTS, StageFacts)
    assert set(FACT_NAMES) == {"reference", "model", "online", "frontier_label", "knob"}
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(StageFacts)), "a fact with a default"
    assert mod.FACTS.model in ("causal", "score") and isinstance(mod.FACTS.reference, bool)
    label = mod.FACTS.frontier_label({"stage": {"name": name}, "trainer": {"beta": 0.1}})
    assert isinstance(label, str) and label.startswith(name)
    # SimPO/ORPO have no KL term: their step size places them too ("β=0.1, lr=...")
    assert mod.FACTS.knob({"beta": 0.1, "kl_control": "fixed", "kl_coef": 0.1}).startswith("β=0.1")
    assert dataclasses.is_dataclass(mod.Options) and callable(mod.run) and callable(mod.encoder)


def test_the_facts_are_the_ones_the_memory_pipeline_and_report_used_to_list():
    """What memory.py, pipeline.py and report.py kept as lists of names before the stages said it."""
    f = {name: stage_module(name).FACTS for name in STAGES}
    assert {n for n, x in f.items() if x.reference} == {"dpo", "kto", "ppo", "grpo", "rloo"}
    assert not f["simpo"].reference and not f["orpo"].reference  # reference-free objectives
    assert {n for n, x in f.items() if x.online} == {"ppo", "grpo", "rloo"}
    assert {n for n, x in f.items() if x.model == "score"} == {"reward"}
    assert f["dpo"].frontier_label({"stage": {"name": "dpo"}, "trainer": {"loss_type": ["ipo"]}}) == "dpo[ipo]"
    assert f["ppo"].knob({"kl_control": "adaptive", "kl_target": 3.0}) == "target=3"


TOY_MODULE = '''
"""A toy stage outside rlhf.stages: `offset` becomes the KL of a made-up evaluation, no model."""
import json
from dataclasses import dataclass, field

from rlhf.stages import StageFacts, common

FACTS = StageFacts(reference=True, model="score", online=False,
                   frontier_label=lambda cfg: f"toy[{cfg['stage']['offset']:g}]",
                   knob=lambda trainer: "offset")
DATA_KINDS = ("sft",)
TRAINER = None


@dataclass
class Options:
    offset: float = field(default=0.5, metadata={"ge": 0})


def encoder(cfg, tokenizer):
    from rlhf.data import SFTEncoder

    return SFTEncoder(tokenizer, int(cfg.model.max_length), "all")


def run(cfg, run_dir):
    with common.stage_run(cfg, run_dir) as ctx:
        ctx.begin()
        off = float(cfg.stage.offset)
        ev = {"kl": off, "gold_policy": 1.0 + off, "gold_reference": 1.0, "gold_win_rate": 0.5, "n_prompts": 1}
        (ctx.run_dir / "eval.json").write_text(json.dumps(ev))
        return common.finish(ctx, kind="eval", model=None, tokenizer=None, metrics={"policy_eval": ev})
'''
TOY_YAML = """\
# @package _global_
stage:
  name: toy
  module: toy_stage   # found on sys.path: no entry in rlhf.stages.STAGES
  offset: 0.5
"""


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    """The toy stage's module and YAML, written outside the repository; returns its overrides."""
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "toy_stage.py").write_text(textwrap.dedent(TOY_MODULE))
    (tmp_path / "conf" / "stage").mkdir(parents=True)
    (tmp_path / "conf" / "stage" / "toy.yaml").write_text(TOY_YAML)
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    return ["stage=toy", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "logger=none"]


def test_a_stage_of_module_and_yaml_only_is_validated_run_estimated_and_reported(compose, toy, tmp_path, capsys):
    from rlhf.report.frontier import collect
    from rlhf.runner import run_stage, validate

    with pytest.raises(UserError) as e:  # validated against its own Options
        validate(compose(*toy, "+stage.offsett=1", "stage.offset=-1"))
    assert "stage.offsett" in e.value.message and "offset" in e.value.message
    assert "stage.offset" in e.value.message.replace("stage.offsett", "")

    art = run_stage(compose(*toy, "stage.offset=0.25"), tmp_path / "sweep" / "toy")  # runnable
    assert art.kind == "eval" and art.stage == "toy" and art.metrics["policy_eval"]["kl"] == 0.25

    report = run_stage(compose(*toy, "mode=check", "data.max_rows=16"))  # memory from its FACTS
    mem = report["memory"]
    assert mem["reference_model"] is True  # the toy says it holds a reference (sft on the same model does not)
    assert mem["model"]["architecture"].endswith("ForSequenceClassification")  # and that it builds a score model
    assert "+ a frozen reference copy" in capsys.readouterr().out

    rows = collect(tmp_path / "sweep")  # placed on the frontier by its own label and knob
    assert [(r["method"], r["knob"], r["kl"]) for r in rows] == [("toy[0.25]", "offset", 0.25)]
    assert json.loads((tmp_path / "sweep" / "toy" / "eval.json").read_text())["gold_policy"] == 1.25


def test_a_stage_module_that_breaks_the_contract_is_refused_by_name(compose, toy, tmp_path):
    from rlhf.runner import validate

    (tmp_path / "plugin" / "half_stage.py").write_text("def run(cfg, run_dir):\n    pass\n")
    with pytest.raises(UserError) as e:
        validate(compose(*toy, "stage.module=half_stage"))
    assert "half_stage" in e.value.message and "FACTS" in e.value.message and "Options" in e.value.message
    with pytest.raises(UserError) as e:
        validate(compose(*toy, "stage.module=no_such_stage_module"))
    assert "cannot import 'no_such_stage_module'" in e.value.message
