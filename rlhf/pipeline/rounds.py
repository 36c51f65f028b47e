"""Rounds of a pipeline (`pipeline.rounds`): the same few steps repeated, each round from the policy
the previous round trained, on a fresh shard of prompts. Iterative DPO (Xiong et al. 2024, "Iterative
Preference Learning from Human Feedback"; Llama 3's rounds) and rejection-sampling fine-tuning are
two such pipelines (conf/pipeline/iterative_dpo.yaml, rejection_sampling.yaml).

`expand(pipeline)` turns the node into the plain step list `rlhf.pipeline` runs, so every round's
step is an ordinary step: its own run directory (`round<r>_<step>`), ledger and evaluation, skipped
when finished with the same config, resumed from its checkpoint when interrupted. A round template
step may use, in `init_from` / `data_from` / `reward_from` and in its overrides:

  {policy}   the policy this round starts from: `rounds.initial_policy` in round 1, else the previous
             round's `rounds.policy_step`
  {initial}  `rounds.initial_policy` (a step of this pipeline or a policy run dir)
  {round}    the round, 1-based;  {offset}  (round - 1) x `rounds.prompts_per_round`

A template step's `data_from` / `reward_from` naming another template step means that step of the
same round. `rounds.reference: initial` also anchors the policy step to the initial policy
(`stage.reference`), `current` (default) to the policy the round starts from.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..errors import UserError

REFERENCES = ("current", "initial")
TARGETS = {"init_from": "model.init_from={}", "data_from": "data.source={}/data.jsonl",
           "reward_from": "evaluation.reward_model={}"}


def expand(pipeline: DictConfig) -> list[DictConfig]:
    """The pipeline's steps, then its rounds' steps (see the module docstring); raises UserError on a
    round count below 1, an unknown reference or a template naming no known step."""
    steps = [OmegaConf.create(OmegaConf.to_container(s, resolve=True)) for s in pipeline.steps]
    r = pipeline.get("rounds")
    if r is None:
        return steps
    problems = []
    n = r.get("count")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        problems.append(f"rounds: expected a whole number of rounds >= 1, got {n!r}")
    if r.get("reference") not in REFERENCES:
        problems.append(f"reference: expected one of {', '.join(REFERENCES)}, got {r.get('reference')!r}")
    template = [OmegaConf.to_container(s, resolve=True) for s in r.steps]
    inner = {t["name"] for t in template}
    if r.get("policy_step") not in inner:
        problems.append(f"pipeline.rounds.policy_step: {r.get('policy_step')!r} is not a round step "
                        f"({', '.join(sorted(inner))})")
    if problems:
        raise UserError(problems, title=f"pipeline {pipeline.get('name')}")
    names = {s.name for s in steps}
    initial = str(r.initial_policy)
    initial_dir = f"{{pipeline_dir}}/{initial}" if initial in names else initial
    policy = initial
    for i in range(1, n + 1):
        values = {"{round}": str(i), "{offset}": str((i - 1) * int(r.prompts_per_round)), "{initial}": initial_dir}
        for t in template:
            step: dict[str, Any] = {"name": f"round{i}_{t['name']}",
                                    "overrides": [_fill(str(o), values) for o in t.get("overrides") or []]}
            for key in TARGETS:
                v = t.get(key)
                if not v:
                    continue
                target = {"{policy}": policy, "{initial}": initial}.get(v, f"round{i}_{v}" if v in inner else v)
                if target in names:
                    step[key] = target
                else:  # a run dir outside this pipeline (e.g. the demo's SFT model)
                    step["overrides"].append(TARGETS[key].format(target))
            if t["name"] == r.policy_step and r.reference == "initial":
                step["overrides"].append(f"stage.reference={initial_dir}")
            step["overrides"] += [f"+round={i}", f"+rounds_of={pipeline.name}"]
            steps.append(OmegaConf.create(step))
            names.add(step["name"])
        policy = f"round{i}_{r.policy_step}"
    return steps


def _fill(text: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        text = text.replace(k, v)
    return text


def wall_lines(results: dict) -> list[str]:
    """`round r: N s (step a s + step b s)` per round of a pipeline's results (skipped steps count 0)."""
    per: dict[int, list[tuple[str, float]]] = {}
    for name, m in results.items():
        head, _, step = name.partition("_")
        if head.startswith("round") and head[5:].isdigit() and step:
            per.setdefault(int(head[5:]), []).append((step, 0.0 if m.get("skipped") else float(m.get("wall_s") or 0)))
    return [f"round {r}: {sum(w for _, w in parts):.0f} s (" + " + ".join(f"{s} {w:.0f} s" for s, w in parts) + ")"
            for r, parts in sorted(per.items())]
