"""A prompt keeps its side in every stage of `pipeline=demo` (issue 21): each step's data config as
the pipeline composes it, through `rlhf.data.load_splits` (no training)."""

from __future__ import annotations

import json

from omegaconf import OmegaConf


def _steps(tmp_path):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from rlhf.cli import register_resolvers
    from rlhf.pipeline import step_configs
    from rlhf.resources import CONFIG_MODULE

    register_resolvers()
    overrides = ["pipeline=demo", "logger=none", f"paths.runs_dir={tmp_path}"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose("config", overrides=overrides), step_configs(compose("config", overrides=overrides),
                                                                         overrides)
    finally:
        GlobalHydra.instance().clear()


def _sides(node) -> dict[str, bool]:
    from rlhf.data import load_splits
    from rlhf.data.split import prompt_key
    from rlhf.stages.inputs import data_config

    s = load_splits(data_config(node), progress=False)
    return {prompt_key(r): False for r in s.train} | {prompt_key(r): True for r in s.eval}


def test_a_prompt_keeps_its_side_in_every_stage_of_the_demo(tmp_path):
    cfg, steps = _steps(tmp_path)
    by_step = dict(steps)
    sides: dict[str, dict[str, bool]] = {}
    sides["sft"] = _sides(by_step["sft"].data)
    # what the generate step writes: pairs on the prompts of its train split (its data.source is the SFT's data)
    generate = _sides(by_step["generate"].data)
    assert generate == sides["sft"]
    out = tmp_path / "demo" / "pipeline" / "generate"
    out.mkdir(parents=True)
    with open(out / "data.jsonl", "w") as f:
        for p in (p for p, held in generate.items() if not held):
            f.write(json.dumps({"prompt": p, "chosen": " happy end.", "rejected": " sad end."}) + "\n")
    for name, step in steps:
        if name == "sft":
            continue
        assert OmegaConf.select(step, "data.split_by") == "prompt"
        sides[name] = _sides(step.data)
        if step.evaluation.enabled and step.evaluation.data is not None:
            sides[f"{name}.evaluation"] = _sides(step.evaluation.data)
    evaluated = {p for k, s in sides.items() if k.endswith(".evaluation") for p, held in s.items() if held}
    assert evaluated == {p for p, held in sides["sft"].items() if held}  # every aligner: the SFT's held-out openings
    for name, s in sides.items():
        trained = {p for p, held in s.items() if not held}
        assert not trained & evaluated, f"{name} trains on {len(trained & evaluated)} evaluation prompts"
    # the same fraction and seed: the same side, prompt by prompt; a larger fraction only holds out more
    fraction = {name: OmegaConf.select(by_step[name.split(".")[0]], "evaluation.data.eval_fraction"
                                       if name.endswith(".evaluation") else "data.eval_fraction") for name in sides}
    for a in sides:
        for b in sides:
            common = sides[a].keys() & sides[b].keys()
            if fraction[a] == fraction[b]:
                assert all(sides[a][p] == sides[b][p] for p in common), (a, b)
            elif fraction[a] < fraction[b]:
                assert all(sides[b][p] for p in common if sides[a][p]), (a, b)
    assert {"reward", "dpo", "ppo", "grpo", "dpo.evaluation", "ppo.evaluation", "grpo.evaluation"} <= sides.keys()
