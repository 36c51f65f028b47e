"""One exception type for user mistakes: bad config, bad data, a wrong artifact.

It carries every problem found at once; the CLI prints them as one message and exits 2.
Tracebacks are for bugs only.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """A mistake the user can fix (config, data, paths, artifacts)."""

    def __init__(self, problems: str | Iterable[str], title: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.title = title
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if len(self.problems) == 1 and not self.title:
            return self.problems[0]
        head = self.title or f"{len(self.problems)} problems"
        return head + ":\n" + "\n".join(f"  - {p}" for p in self.problems)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean `x`?)' for the closest choice, or '' when none is close."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


class RunFailed(UserError):
    """A user-fixable problem found while a run trains (a diverged loss, non-finite weights).

    Exit 2 like any UserError, but the run directory is kept and marked `failed` (it holds what was
    tried: the config, the log, the checkpoints) instead of being removed as a refused run's is.
    """
