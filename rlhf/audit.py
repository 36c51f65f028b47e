"""Audit reward models: scorers that are NOT optimised, scored beside the optimised proxy at every
evaluation point (`evaluation.audit_reward_models`). Where the proxy keeps rising and they do not,
the policy is exploiting the proxy's errors rather than learning what the reward models agree on
(Coste et al. 2023, "Reward Model Ensembles Help Mitigate Overoptimization"; Eisenstein et al. 2023,
"Helping or Herding?"): the over-optimisation signal without a gold judge (`rlhf.monitor`).
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError


def audit_scorers(cfg, conversational: bool = False) -> dict:
    """{"audit_<i>": (prompts, completions) -> scores} for each entry of
    `evaluation.audit_reward_models`: a reward run dir (a finished `kind: reward` artifact, scored as
    PPO scores it, on prompt + response) or a judge (a name of `rlhf.judges` or module.attr, given the
    prompts as plain text). Loaded before anything trains, so a wrong entry fails in seconds."""
    entries = list(cfg.evaluation.get("audit_reward_models") or [])
    out, problems = {}, []
    for i, spec in enumerate(entries):
        where = f"evaluation.audit_reward_models[{i}]"
        try:
            out[f"audit_{i}"] = _scorer(cfg, str(spec), where, conversational)
        except UserError as e:
            problems += e.problems
    if problems:
        raise UserError(problems)
    return out


def _scorer(cfg, spec: str, where: str, conversational: bool):
    if Path(spec).is_dir():
        from .stages.common import reward_scorer

        return reward_scorer(cfg, spec, where, conversational)
    from .data.chat import plain_text
    from .judges import resolve

    judge = resolve(spec, where)
    return lambda prompts, completions: judge([plain_text(p) for p in prompts], completions)
