"""DataConfig: built from a config node, every bad key and value reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhf.data import DataConfig
from rlhf.errors import UserError

CONF_DATA = Path(__file__).resolve().parents[2] / "conf" / "data"


def test_fields_mirror_the_yaml_defaults():
    node = OmegaConf.load(CONF_DATA / "tinystories.yaml")
    node.merge_with({"assets_dir": "/assets", "seed": 7})
    values = {k: node[k] for k in node if k != "assets_dir"}
    cfg = DataConfig.from_mapping(values)
    assert cfg.kind == "sft" and cfg.format == "tinystories" and cfg.seed == 7
    assert cfg.source == "/assets/data/tinystories/stories.jsonl"


@pytest.mark.parametrize(("name", "kind"), [("hh_rlhf", "pair"), ("oasst", "ranked")])
def test_each_preset_yaml_builds(name, kind):
    node = OmegaConf.merge(
        OmegaConf.load(CONF_DATA / "tinystories.yaml"), OmegaConf.load(CONF_DATA / f"{name}.yaml")
    )
    node.merge_with({"assets_dir": "/assets", "seed": 0})
    cfg = DataConfig.from_mapping({k: node[k] for k in node if k not in ("defaults", "assets_dir")})
    assert cfg.kind == kind and cfg.source.startswith("/assets/data/")


def test_unknown_key_has_a_did_you_mean():
    with pytest.raises(UserError) as e:
        DataConfig.from_mapping(
            {"kind": "sft", "source": "x.jsonl", "format": "canonical", "eval_fracton": 0.1}
        )
    assert "data.eval_fracton: unknown key (did you mean `eval_fraction`?)" in e.value.message


def test_all_bad_values_in_one_error():
    bad = {
        "kind": "pairs",
        "source": "???",
        "format": "hh",
        "on_invalid": "skip",
        "eval_fraction": 1.0,
        "max_rows": 0,
        "dedupe": "yes",
        "seed": 1.5,
    }
    with pytest.raises(UserError) as e:
        DataConfig.from_mapping(bad)
    msg = e.value.message
    for needle in (
        "data.kind: 'pairs'",
        "(did you mean `pair`?)",
        "data.source: missing",
        "data.format: 'hh'",
        "data.on_invalid: 'skip'",
        "data.eval_fraction: expected a number in [0, 1)",
        "data.max_rows",
        "data.dedupe",
        "data.seed",
    ):
        assert needle in msg
    assert len(e.value.problems) == 8


def test_missing_mandatory_values_of_an_omegaconf_node():
    node = OmegaConf.create({"kind": "???", "source": "???", "format": "canonical"})
    with pytest.raises(UserError) as e:
        DataConfig.from_mapping(node)
    assert "data.kind: missing" in e.value.message and "data.source: missing" in e.value.message


def test_format_must_produce_the_kind():
    with pytest.raises(UserError, match="format hh_rlhf produces pair or unpaired rows, but kind is sft"):
        DataConfig(kind="sft", source="x.jsonl", format="hh_rlhf")
