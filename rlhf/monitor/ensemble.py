"""Reward-model ensembles (Coste et al. 2023, "Reward Model Ensembles Help Mitigate
Overoptimization"; Eisenstein et al. 2023, "Helping or Herding? Reward Model Ensembles Mitigate but
do not Eliminate Reward Hacking").

`stage=reward stage.ensemble=k` trains k reward models, member i with seed `seed + i` on a bootstrap
resample of the training rows (n rows drawn with replacement, seeded; `stage.bootstrap=false`: the
same rows, only the seed differs). Each member is a complete reward artifact of its own in
`<run dir>/members/<i>/` (model card, portable tokenizer/config: it loads in plain transformers as
any reward model does); the ensemble's `artifact.json` is a `kind: reward` artifact whose model is
member 0 (so every consumer of a reward model works unchanged) and whose `extra.ensemble` lists the
members.

An online stage pointed at an ensemble (`stage.reward_model`) optimises `stage.reward_aggregate`:
`member` (member `stage.reward_member`), `mean`, `min` (worst-case, WCO) or `mean_minus_std`
(uncertainty-weighted, UWO: mean − `stage.reward_lambda`·std over members), Coste et al. eq. 2-4.
With `member`, the other members become the audit reward models (`rlhf.monitor.audit`) unless
`evaluation.audit_reward_models` names others.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

AGGREGATES = ("member", "mean", "min", "mean_minus_std")


def members(run_dir: str | Path) -> list[str] | None:
    """The member run dirs of an ensemble reward artifact, or None for a single reward model."""
    from ..run.artifacts import read_artifact

    art = read_artifact(run_dir, expect_kinds=("reward",), what="stage.reward_model")
    ens = art.extra.get("ensemble")
    return [str(Path(art.run_dir) / m) for m in ens] if ens else None


def bootstrap(features, seed: int):
    """n rows drawn with replacement from `features` (a datasets.Dataset), seeded."""
    import numpy as np

    idx = np.random.default_rng(seed).integers(0, len(features), size=len(features))
    return features.select(idx.tolist())


def aggregate(scores: list[list[float]], how: str, member: int = 0, lam: float = 1.0) -> list[float]:
    """`scores[m][i]`: member m's score of sample i -> one score per sample (Coste et al. 2023)."""
    import numpy as np

    s = np.asarray(scores, dtype=float)
    if how == "member":
        return s[member].tolist()
    if how == "mean":
        return s.mean(0).tolist()
    if how == "min":
        return s.min(0).tolist()
    return (s.mean(0) - lam * s.std(0)).tolist()


def stage_scorer(cfg, reward_scorer, conversational: bool):
    """The reward an online stage optimises from `stage.reward_model`: one reward model's scorer, or
    an ensemble's aggregate (`stage.reward_aggregate`); `reward_scorer(cfg, run_dir, what,
    conversational)` loads one reward model (`rlhf.stages.evaluator.reward_scorer`)."""
    st = cfg.stage
    dirs = members(st.reward_model)
    if dirs is None:
        return reward_scorer(cfg, st.reward_model, "stage.reward_model", conversational)
    how, member, lam = str(st.reward_aggregate), int(st.reward_member), float(st.reward_lambda)
    if how == "member":
        return reward_scorer(cfg, dirs[member], f"stage.reward_model (member {member})", conversational)
    scorers = [reward_scorer(cfg, d, f"stage.reward_model (member {i})", conversational) for i, d in enumerate(dirs)]
    log.info("reward: %s of the %d members of %s", how, len(dirs), st.reward_model)

    def score(prompts, completions):
        return aggregate([list(map(float, s(prompts, completions))) for s in scorers], how, member, lam)

    score.model = scorers[0].model  # what the stage inspects (dtype, DeepSpeed engine)
    return score


def stage_options_problems(cfg) -> list[str]:
    """`stage.reward_aggregate` / `stage.reward_member` against the ensemble named (when it exists)."""
    st = cfg.stage
    if st.get("reward_aggregate", "member") == "member" and not st.get("reward_member"):
        return []
    if not st.get("reward_model") or not Path(str(st.reward_model)).is_dir():
        return []
    from ..errors import UserError

    try:
        dirs = members(st.reward_model)
    except UserError:
        return []  # said when the stage loads it
    if dirs is None:
        return [f"stage.reward_aggregate={st.reward_aggregate}: {st.reward_model} is one reward model, not an "
                "ensemble (train one with stage=reward stage.ensemble=k)"]
    if not 0 <= int(st.reward_member) < len(dirs):
        return [f"stage.reward_member: {st.reward_member} is not a member of the {len(dirs)}-model ensemble "
                f"{st.reward_model} (0..{len(dirs) - 1})"]
    return []


def other_members(cfg) -> list[str]:
    """The audit of a stage that optimises one member: the other members (empty otherwise)."""
    st = cfg.stage
    if not st.get("reward_model") or st.get("reward_aggregate", "member") != "member":
        return []
    from ..errors import UserError

    try:
        dirs = members(st.reward_model)
    except UserError:
        return []
    return [d for i, d in enumerate(dirs or []) if i != int(st.get("reward_member") or 0)]
