"""Judges and reward functions: any Python callable `(prompts, completions) -> scores` (one float per
completion, higher is better). One resolver, `resolve`, serves every stage and option that names
one (`stage.judge`, `stage.reward_funcs`, `evaluation.judge`): a name from `NAMED`, or ``module.attr``
/ ``module:attr`` of any importable callable (importing it runs that module's code: see the README's
"Trust" section).

The embedded demo's gold "human" is VADER (Hutto & Gilbert 2014), a real rule-based sentiment scorer:
its compound score lies in [-1, 1].
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from functools import lru_cache

from .errors import UserError, did_you_mean

Judge = Callable[[Sequence[str], Sequence[str]], list[float]]


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """VADER compound sentiment of each completion (the story's continuation, not the given opening)."""
    analyzer = _vader()
    return [float(analyzer.polarity_scores(c)["compound"]) for c in completions]


def vader_sentences(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """The mean VADER compound score of a completion's sentences (split after . ! ?): a gold scale that
    keeps resolving where the whole-text compound saturates at ±1 (71 % of 200 TinyStories stories
    score beyond ±0.95 whole, none per sentence: README "Over-optimisation")."""
    import re

    analyzer = _vader()
    out = []
    for c in completions:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", c.strip()) if s]
        out.append(sum(analyzer.polarity_scores(s)["compound"] for s in sentences) / len(sentences) if sentences else 0.0)
    return out


def length(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """Number of words: a trivial judge, handy to see what length alone would buy."""
    return [float(len(c.split())) for c in completions]


def brevity(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """−words / 100: a gentle pull towards shorter answers, to combine with another reward."""
    return [-len(c.split()) / 100.0 for c in completions]


NAMED: dict[str, Judge] = {"vader": vader, "length": length, "brevity": brevity}
NAMED["vader_sentences"] = vader_sentences  # per-sentence mean: does not saturate on long responses


def resolve(spec: str, what: str = "stage.judge") -> Judge:
    """A name from NAMED, or ``module.attr`` / ``module:attr`` naming a callable; a UserError otherwise."""
    spec = str(spec)
    if spec in NAMED:
        return NAMED[spec]
    if "." not in spec and ":" not in spec:
        raise UserError(f"{what}: unknown judge / reward function {spec!r}{did_you_mean(spec, NAMED)}; "
                        f"named ones: {', '.join(NAMED)}, or module.attr of your own")
    mod_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"{what}: cannot import {spec!r} ({e}); expected module.attr naming a callable "
                        "(prompts, completions) -> scores, e.g. rlhf.judges.vader") from None
    if not callable(fn):
        raise UserError(f"{what}: {spec!r} is not callable")
    return fn
