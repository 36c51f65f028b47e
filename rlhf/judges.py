"""Judges: any Python callable `(prompts, completions) -> scores` (one float per completion, higher is
better), named in the config as ``module.attr`` or ``module:attr``.

The embedded demo's gold "human" is VADER (Hutto & Gilbert 2014), a real rule-based sentiment scorer:
its compound score lies in [-1, 1].
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from functools import lru_cache

from .errors import UserError

Judge = Callable[[Sequence[str], Sequence[str]], list[float]]


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """VADER compound sentiment of each completion (the story's continuation, not the given opening)."""
    analyzer = _vader()
    return [float(analyzer.polarity_scores(c)["compound"]) for c in completions]


def length(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """Number of words: a trivial judge, handy to see what length alone would buy."""
    return [float(len(c.split())) for c in completions]


def load_judge(spec: str | None, what: str = "stage.judge") -> Judge | None:
    """Resolve ``package.module.attr`` / ``package.module:attr`` to a callable (None stays None)."""
    if not spec:
        return None
    if ":" in spec:
        mod_name, _, attr = spec.partition(":")
    else:
        mod_name, _, attr = spec.rpartition(".")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"{what}: cannot import {spec!r} ({e}); expected module.attr naming a callable "
                        "(prompts, completions) -> scores, e.g. rlhf.judges.vader") from None
    if not callable(fn):
        raise UserError(f"{what}: {spec!r} is not callable")
    return fn
