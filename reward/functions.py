"""Named reward functions for the online RL stages (ppo, grpo, rloo): `stage.reward_funcs=[vader]`.

A reward function is any callable ``(prompts, completions) -> list[float]`` (one score per
completion, higher is better). Besides the names below, a config may give ``module.attr`` of any
importable callable of that shape. A reward-model artifact becomes one too (``RewardScorer`` in
``rlhf.generation``); :func:`as_trl_reward_func` adapts either to the keyword call TRL's GRPO and
RLOO trainers make.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# The demo's gold judge (VADER compound sentiment in [-1, 1]) and the word-count baseline.
from rlhf.judges import length, vader

RewardFn = Callable[[Sequence[str], Sequence[str]], list[float]]


def brevity(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """−words / 100: a gentle pull towards shorter answers, to combine with another reward."""
    return [-len(c.split()) / 100.0 for c in completions]


REWARD_FUNCTIONS: dict[str, RewardFn] = {"vader": vader, "length": length, "brevity": brevity}


def resolve(spec: str, what: str = "stage.reward_funcs") -> RewardFn:
    """A name from REWARD_FUNCTIONS or ``module.attr``; a UserError names the choices otherwise."""
    if spec in REWARD_FUNCTIONS:
        return REWARD_FUNCTIONS[spec]
    if "." not in spec and ":" not in spec:
        from rlhf.errors import UserError, did_you_mean

        raise UserError(f"{what}: unknown reward function {spec!r}{did_you_mean(spec, set(REWARD_FUNCTIONS))}; "
                        f"named ones: {', '.join(REWARD_FUNCTIONS)}, or module.attr of your own")
    from rlhf.judges import load_judge

    return load_judge(spec, what)


def as_trl_reward_func(fn: RewardFn, name: str):
    """TRL calls reward functions as ``f(prompts=..., completions=..., completion_ids=..., **columns)``
    and logs them under ``__name__``."""

    def reward_func(prompts, completions, **_):
        return [float(x) for x in fn(list(prompts), list(completions))]

    reward_func.__name__ = name
    return reward_func
