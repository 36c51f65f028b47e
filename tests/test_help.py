"""`rlhf --help`: Hydra's own help text, built from one config repository (rlhf/cmdline.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Runs `rlhf <args>` in a fresh interpreter, counting the config repositories Hydra copies.
SCRIPT = """
import sys
from hydra._internal import config_loader_impl as impl
made = []
original = impl.CachingConfigRepository.__init__
def counting(self, delegate):
    made.append(1)
    original(self, delegate)
impl.CachingConfigRepository.__init__ = counting
import rlhf.cli as cli
sys.argv = ["rlhf", *sys.argv[1:]]
if {patched}:
    try:
        cli.main()
    except SystemExit:
        pass
else:  # Hydra alone: the same task, no help patch
    cli.register_resolvers()
    try:
        cli._hydra_main()
    except SystemExit:
        pass
print("REPOSITORIES", len(made))
"""


def _help(*args: str, patched: bool) -> tuple[str, int]:
    res = subprocess.run([sys.executable, "-c", SCRIPT.format(patched=patched), *args],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    text, _, count = res.stdout.rpartition("REPOSITORIES ")
    return text, int(count)


@pytest.mark.parametrize("args", [("--help",), ("--help", "stage=dpo"), ("--hydra-help",)])
def test_help_text_is_hydras_from_one_repository(args):
    ours, copies = _help(*args, patched=True)
    hydra, hydra_copies = _help(*args, patched=False)
    assert ours == hydra and "== Configuration groups ==" in ours
    assert hydra_copies > 50 and copies <= 3
