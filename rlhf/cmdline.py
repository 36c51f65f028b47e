"""The command line: its arguments checked before Hydra composes anything, and `--help` made fast.

- A key given twice (`trainer.beta=0.1 trainer.beta=2`, or two sweep dimensions of one key) is
  refused: Hydra keeps the last value without a word, which silently drops a sweep dimension.
- `run_dir=<dir>` under `-m`: Hydra puts sweep members in `hydra.sweep.dir/<n>` and would ignore
  it, while every member's config.yaml claimed it. It becomes the sweep dir (members in
  `<dir>/<n>`); given together with `hydra.sweep.dir`, or as a sweep of several dirs, it is refused.
- `experiment_name` is a folder under the runs dir: one that climbs out of it (`../x`, `/abs`) is
  refused before Hydra creates a directory.

Each problem is a UserError (one line, exit 2 at the CLI); `rewrite` returns the argv to give Hydra.

`--help` in well under a second: Hydra's own help text, one config repository instead of ~120.

Hydra 1.3 lists the config groups for `--help` / `--hydra-help` through
`ConfigLoaderImpl.get_group_options`, and each call deep-copies the whole config repository
(every search path and every structured config the plugins registered) before answering: about
120 copies for this project's groups and options, 3 of the 3.7 CPU-s that `--help` took
(profiled with cProfile; bench/run.py, P6). Printing help reads and never changes the repository,
so while help is printed the copy made for the first question answers the others. The text is
unchanged (tests/test_help.py compares it with Hydra's unpatched output).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import PurePath

from .errors import UserError

# Hydra flags that take the next argument as their value (not an override).
_VALUED = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
           "--info", "-i", "--experimental-rerun", "--shell-completion", "-sc"}
_MULTIRUN = {"-m", "--multirun"}


def overrides(argv: list[str]) -> list[tuple[str, str, str]]:
    """(key, value, the argument as given) of each `key=value` override, flags and their values skipped.
    The key has Hydra's `+`, `++`, `~` prefix removed: `+a=1 a=2` gives the same key twice."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = arg in _VALUED and "=" not in arg and arg not in ("--info", "-i")
            continue
        if "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        out.append((key.lstrip("+~").strip(), value, arg))
    return out


def experiment_name_problem(value: str) -> str | None:
    """Why `experiment_name` would put runs outside the runs dir (None when it stays inside)."""
    path = PurePath(str(value))
    if not str(value).strip():
        return "experiment_name: empty; it names a folder under the runs dir"
    if path.is_absolute() or ".." in path.parts or str(value).startswith("~"):
        return (f"experiment_name: {value!r} would put the run outside the runs dir ({path.is_absolute() and 'an absolute path' or '`..` or `~`'}); "
                "use a plain name such as my_exp (or a/b), or set run_dir= / paths.runs_dir= to choose where runs go")
    return None


def check(argv: list[str]) -> list[str]:
    """Refuse what Hydra would silently reinterpret; return the arguments Hydra is to get."""
    given = overrides(argv)
    problems = []
    seen: dict[str, str] = {}
    for key, _value, arg in given:
        if key in seen:
            problems.append(f"{key}: given twice on the command line ({seen[key]} and {arg}); Hydra would keep only the "
                            f"last one{' and drop a sweep dimension' if ',' in seen[key] + arg else ''}. Give it once "
                            f"(a sweep over both: {key}={_merge(seen[key], arg)})")
        else:
            seen[key] = arg
    for key, value, _ in given:
        if key == "experiment_name" and (why := experiment_name_problem(value)):
            problems.append(why)
    multirun = any(a in _MULTIRUN for a in argv)
    values = {k: v for k, v, _ in given}
    if multirun and "run_dir" in values:
        if "hydra.sweep.dir" in values:
            problems.append("run_dir: under -m the members go to hydra.sweep.dir/<n>; give hydra.sweep.dir only "
                            f"(got run_dir={values['run_dir']} and hydra.sweep.dir={values['hydra.sweep.dir']})")
        elif "," in values["run_dir"]:
            problems.append(f"run_dir: {values['run_dir']!r} is a sweep over run dirs; under -m the members go to "
                            "hydra.sweep.dir/<n>: set hydra.sweep.dir=<dir> once")
    if problems:
        raise UserError(problems if len(problems) > 1 else problems[0],
                        title="the command line" if len(problems) > 1 else None)
    if multirun and "run_dir" in values:  # honoured: the sweep's members go to <run_dir>/<n>
        return [f"hydra.sweep.dir={values['run_dir']}" if o[0] == "run_dir" else o[2] for o in _keep(argv, given)]
    return argv


def _keep(argv: list[str], given: list[tuple[str, str, str]]):
    """Every argument of argv, as (key or None, value or None, argument)."""
    by_arg = {arg: (k, v, arg) for k, v, arg in given}
    return [by_arg.get(a, (None, None, a)) for a in argv]


def _merge(a: str, b: str) -> str:
    va, vb = a.split("=", 1)[1], b.split("=", 1)[1]
    return ",".join(dict.fromkeys([*va.split(","), *vb.split(",")]))


class HeldStderr:
    """Holds what is written to stderr until the Hydra task starts (`release`), so that a refusal Hydra
    reports in several lines (an unknown preset with its options, a bad override with its config
    node, the HYDRA_FULL_ERROR hint) becomes one `rlhf: error:` line (`summary`). After `release`
    it forwards every write (a log handler made meanwhile keeps writing through it)."""

    def __init__(self) -> None:
        self.real, self.held, self.released = sys.stderr, [], False

    def write(self, text: str) -> int:
        if self.released:
            return self.real.write(text)
        self.held.append(text)
        return len(text)

    def flush(self) -> None:
        self.real.flush()

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self) -> HeldStderr:
        sys.stderr = self
        return self

    def __exit__(self, *exc) -> bool:
        if sys.stderr is self:
            sys.stderr = self.real
        return False

    def __reduce__(self):
        # A launcher that pickles the task's state (submitit) meets this object (rlhf.cli holds it):
        # it unpickles as one already released, forwarding to the stderr of the process that loads it.
        return (_released, ())

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.real.write("".join(self.held))
            self.held = []

    def summary(self) -> str:
        """Hydra's report as one line: its lines joined, the hint and the node's type details left out."""
        skip = ("Set the environment variable HYDRA_FULL_ERROR", "full_key:", "reference_type=", "object_type=",
                "provider=")
        lines = [ln.strip() for ln in "".join(self.held).splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith(skip) and ln != "Config search path:"]
        out, listing = "", False
        for ln in lines:
            if not out:
                out = ln
            elif out.endswith(":"):  # "Available options in 'stage':" and its items, one per line
                out, listing = f"{out} {ln}", True
            elif listing and " " not in ln:
                out += f", {ln}"
            else:
                out, listing = f"{out}; {ln}", False
        return out or "the command line was refused"


def _released() -> HeldStderr:
    held = HeldStderr()
    held.released = True
    return held


HELP_FLAGS = ("--help", "-h", "--hydra-help")


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in HELP_FLAGS for a in argv)


@contextlib.contextmanager
def one_config_repository() -> Iterator[None]:
    """Within the block, Hydra's config loader reuses one repository copy per (config, overrides)."""
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        original = ConfigLoaderImpl._parse_overrides_and_create_caching_repo
    except (ImportError, AttributeError):  # another Hydra layout: plain (slower) help
        yield
        return
    made: dict = {}

    def reuse(self, config_name, overrides):
        key = (id(self), config_name, tuple(overrides))
        if key not in made:
            made[key] = original(self, config_name, overrides)
        return made[key]

    ConfigLoaderImpl._parse_overrides_and_create_caching_repo = reuse
    try:
        yield
    finally:
        ConfigLoaderImpl._parse_overrides_and_create_caching_repo = original
