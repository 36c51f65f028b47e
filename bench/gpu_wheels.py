"""The wheels bench/gpu.sh installs on a GPU machine without network, fetched here: `make gpu-wheels`.

    .venv/bin/python bench/gpu_wheels.py [--dest .whl]      # download / build into .whl/ (git-ignored)
    .venv/bin/python bench/gpu_wheels.py --check .whl       # is every package there, once?

The machine has Python 3.12, torch, transformers (an older one), peft, accelerate, numpy, pandas,
pyarrow and the usual small libraries; what it lacks is fetched for CPython 3.12 on manylinux
x86_64, at the versions this checkout's virtualenv runs (the ones the tests pass with).
deepspeed and antlr4 (hydra's parser runtime) publish only source archives: they are built here
into pure-Python wheels. bitsandbytes' wheel carries kernels for every CUDA and ROCm release
(124 MiB unpacked); only its CUDA 13 and CPU libraries are kept (the machine's torch is built for
CUDA 13), so that everything a GPU call carries stays under its 64 MiB limit. The few assets
gpu.py reads (GPT-2 tokenizer, TinyStories) are copied to .whl/assets/.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# distribution -> pinned version (None: the version in this virtualenv)
NEEDED = {
    "trl": None, "transformers": None, "datasets": None, "dill": None, "multiprocess": None,
    "hydra-core": None, "omegaconf": None, "antlr4-python3-runtime": None,
    "deepspeed": None, "hjson": None, "pydantic": None, "pydantic-core": None, "annotated-types": None,
    "typing-inspection": None, "peft": None,
    "wandb": None, "sentry-sdk": "2.75.0", "gitpython": "3.2.1", "gitdb": "4.0.12", "smmap": "5.0.3",
    "platformdirs": None,
    "bitsandbytes": "0.50.2",
}
FROM_SOURCE = ("deepspeed", "antlr4-python3-runtime")
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"] + [
    a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64") for a in ("--platform", p)]
KEEP_BNB = re.compile(r"libbitsandbytes_(cpu|cuda13\d)\.so$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pin(name: str) -> str:
    version = NEEDED[name]
    if version is None:
        version = md.version(name)
    return f"{name}=={version}"


def wheel_name(path: Path) -> str:
    return canonical(path.name.split("-")[0])


def trim_bitsandbytes(wheel: Path) -> None:
    """Drop the kernels of other CUDA/ROCm/XPU releases from the wheel (and from its RECORD)."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            name = item.filename
            if name.endswith(".so") and name.startswith("bitsandbytes/lib") and not KEEP_BNB.search(name):
                continue
            data = src.read(name)
            if name.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = "\n".join(ln for ln in lines if not (".so," in ln and "libbitsandbytes_" in ln
                                                            and not KEEP_BNB.search(ln.split(",")[0]))).encode()
            dst.writestr(item, data)
    tmp.replace(wheel)


def prepare(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    binary = [pin(n) for n in NEEDED if n not in FROM_SOURCE]
    subprocess.run([*pip, "download", "-q", "--no-deps", *PLATFORM, "-d", str(dest), *binary], check=True)
    # sdists: pure Python, built with this environment's torch (deepspeed's setup imports it)
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest),
                    *[pin(n) for n in FROM_SOURCE]], check=True)
    for w in dest.glob("bitsandbytes-*.whl"):
        trim_bitsandbytes(w)
    assets = Path(__import__("os").environ.get("RLHF_ASSETS_DIR", ROOT.parent / "shared" / "assets"))
    for rel in ("tokenizers/gpt2", "data/tinystories/stories.jsonl"):
        target = dest / "assets" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if (assets / rel).is_dir():
            shutil.copytree(assets / rel, target, dirs_exist_ok=True)
        else:
            shutil.copy2(assets / rel, target)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{dest}: {len(list(dest.glob('*.whl')))} wheels + assets, {size / 2**20:.1f} MiB")
    check(dest, allow_missing=False)


def check(dest: Path, allow_missing: bool) -> int:
    wheels = sorted(dest.glob("*.whl")) if dest.is_dir() else []
    have: dict[str, list[str]] = {}
    for w in wheels:
        have.setdefault(wheel_name(w), []).append(w.name)
    missing = [n for n in NEEDED if canonical(n) not in have]
    doubles = {n: v for n, v in have.items() if len(v) > 1}
    for n, v in doubles.items():
        print(f"gpu_wheels: two versions of {n}: {', '.join(v)} (pip would refuse; delete one)", file=sys.stderr)
    if missing:
        print(f"gpu_wheels: {dest} lacks {', '.join(missing)}" + (" (dry run: not needed)" if allow_missing else
              "; run make gpu-wheels"), file=sys.stderr)
    return 1 if doubles or (missing and not allow_missing) else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dest", type=Path, default=ROOT / ".whl")
    ap.add_argument("--check", type=Path, default=None, help="only check a wheel folder")
    ap.add_argument("--allow-missing", action="store_true")
    a = ap.parse_args(argv)
    if a.check is not None:
        return check(a.check, a.allow_missing)
    prepare(a.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
