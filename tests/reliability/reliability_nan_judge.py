"""A judge for the non-finite tests: NaN scores on its first call, the word count afterwards."""

from __future__ import annotations

CALLS = {"n": 0}


def nan_once(prompts, completions):
    CALLS["n"] += 1
    if CALLS["n"] == 1:
        return [float("nan")] * len(completions)
    return [float(len(c.split())) for c in completions]
