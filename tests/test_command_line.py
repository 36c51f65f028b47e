"""The command line means what it says (rlhf.cmdline): a key given twice is refused before anything
is composed; `run_dir=` under `-m` is where the members go; config.yaml records the directory a run
really used, and the log says why a suffix was added."""

from __future__ import annotations

import pytest
import yaml

from rlhf.cmdline import check
from rlhf.errors import UserError


def test_a_key_given_twice_names_the_key_and_both_values():
    with pytest.raises(UserError) as e:
        check(["-m", "mode=check", "model.max_length=64,128", "model.max_length=256,512"])
    assert "model.max_length: given twice on the command line (model.max_length=64,128 and " \
           "model.max_length=256,512)" in e.value.message and "drop a sweep dimension" in e.value.message
    with pytest.raises(UserError, match=r"trainer.beta: given twice .*\+\+trainer.beta=2"):
        check(["trainer.beta=0.1", "++trainer.beta=2"])  # Hydra's prefixes do not make it another key
    assert check(["--cfg", "job", "trainer.beta=0.1", "data.seed=1"]) == ["--cfg", "job", "trainer.beta=0.1", "data.seed=1"]


def test_run_dir_under_multirun_becomes_the_sweep_dir():
    assert check(["-m", "run_dir=/x/sw", "seed=1,2"]) == ["-m", "hydra.sweep.dir=/x/sw", "seed=1,2"]
    assert check(["run_dir=/x/one"]) == ["run_dir=/x/one"]  # a single run: as given
    with pytest.raises(UserError, match="give hydra.sweep.dir only"):
        check(["-m", "run_dir=/x/a", "hydra.sweep.dir=/x/b"])


@pytest.mark.slow
def test_sweep_members_go_under_run_dir_and_record_the_dir_they_used(cli, tmp_path):
    """`run_dir=<dir>` under -m: members in <dir>/0 and <dir>/1, each config.yaml naming its own; a second
    sweep into the same dir gets <dir>/0-1, and the log says why (was: members in runs/default/multirun,
    config.yaml claiming <dir>, and "started in the same second" for a run of a minute before)."""
    sw = tmp_path / "sw"
    base = ["-m", "stage=sft", "debug=smoke", "logger=none", "trainer.max_steps=1", "trainer.eval_strategy=no",
            "stage.eval_before=false", f"run_dir={sw}"]
    out = cli(*base, "trainer.learning_rate=1e-3,1e-4")
    assert out.returncode == 0, out.stderr[-3000:]
    for n in ("0", "1"):
        assert yaml.safe_load((sw / n / "config.yaml").read_text())["run_dir"] == str(sw / n)
        assert (sw / n / "artifact.json").is_file()
    assert not (tmp_path / "runs").exists()
    out = cli(*base, "trainer.learning_rate=1e-2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"run dir {sw / '0'} already holds a finished run (artifact.json): using {sw / '0-1'}" in out.stdout + out.stderr
    assert yaml.safe_load((sw / "0-1" / "config.yaml").read_text())["run_dir"] == str(sw / "0-1")


def test_a_bad_override_under_multirun_is_one_line_and_exit_2(cli, tmp_path):
    """Under -m a composition error was Hydra's several-line report with its HYDRA_FULL_ERROR hint;
    now as without -m: one `rlhf: error:` line naming the key, exit 2, nothing run."""
    out = cli("-m", "stage=sft", "debug=smoke", "logger=none", "trainer.nosuchkey=1,2", f"run_dir={tmp_path / 'sw'}")
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith("rlhf: error: Could not override 'trainer.nosuchkey'")
    assert "HYDRA_FULL_ERROR" not in out.stderr and not (tmp_path / "sw" / "0").exists()
