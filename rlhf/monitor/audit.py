"""Audit reward models: scorers that are NOT optimised, scored beside the optimised proxy at every
evaluation point (`evaluation.audit_reward_models`). Where the proxy keeps rising and they do not,
the policy is exploiting the proxy's errors rather than learning what the reward models agree on
(Coste et al. 2023, "Reward Model Ensembles Help Mitigate Overoptimization"; Eisenstein et al. 2023,
"Helping or Herding?"): the over-optimisation signal without a gold judge (`rlhf.monitor`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def audit_scorers(cfg, reward_scorer, conversational: bool = False) -> dict:
    """{"audit_<i>": (prompts, completions) -> scores} for each entry of
    `evaluation.audit_reward_models`: a reward run dir (a finished `kind: reward` artifact, scored as
    PPO scores it, on prompt + response) or a judge (a name of `rlhf.judges` or module.attr, given the
    prompts as plain text); `reward_scorer(cfg, run_dir, what, conversational)` loads a reward
    model (`rlhf.stages.evaluator.reward_scorer`); none named while the stage optimises one member of an ensemble
    (`rlhf.monitor.ensemble`): the other members. Loaded before anything trains, so a wrong entry fails in seconds."""
    entries = list(cfg.evaluation.get("audit_reward_models") or [])
    if not entries and "reward_aggregate" in cfg.stage:  # one member of an ensemble optimised: the others audit it
        from .ensemble import other_members

        entries = other_members(cfg)
    out, problems = {}, []
    for i, spec in enumerate(entries):
        where = f"evaluation.audit_reward_models[{i}]"
        try:
            out[f"audit_{i}"] = _scorer(cfg, str(spec), where, conversational, reward_scorer)
        except UserError as e:
            problems += e.problems
    if problems:
        raise UserError(problems)
    return out


def problems(cfg) -> list[str]:
    """Config-time checks (`rlhf.config.validate`): each judge entry resolves; a run dir that exists
    already is a finished reward artifact (one that does not may be an earlier pipeline step's: it
    is checked when the stage loads it)."""
    from ..judges import resolve
    from ..run.artifacts import read_artifact

    out = []
    for i, spec in enumerate(cfg.evaluation.get("audit_reward_models") or []):
        where = f"evaluation.audit_reward_models[{i}]"
        try:
            if _is_path(str(spec)):
                if Path(str(spec)).expanduser().is_dir():
                    read_artifact(str(spec), expect_kinds=("reward",), what=where)
            else:
                resolve(str(spec), where)
        except UserError as e:
            out += e.problems
    return out


def _is_path(spec: str) -> bool:
    return "/" in spec or spec.startswith((".", "~")) or Path(spec).expanduser().is_dir()


def _scorer(cfg, spec: str, where: str, conversational: bool, reward_scorer):
    if _is_path(spec):
        return reward_scorer(cfg, spec, where, conversational)
    from ..data.chat import plain_text
    from ..judges import resolve

    judge = resolve(spec, where)
    return lambda prompts, completions: judge([plain_text(p) for p in prompts], completions)
