"""`rlhf --help` in well under a second: Hydra's own help text, one config repository instead of ~120.

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
from collections.abc import Iterator, Sequence

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
