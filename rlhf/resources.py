"""Where the framework's own files are, the same in a wheel install, an editable install and a checkout.

- The Hydra configs sit in `conf/` at the top of the repo (the layout shows the data flow) and are
  installed as the package `rlhf.conf` (`package-dir` in pyproject.toml, like `data/` -> `rlhf.data`),
  so Hydra reads them as `pkg://rlhf.conf` wherever the package is installed and whatever the cwd.
- The embedded assets (the tiny model and datasets of the demo) are not packaged: `assets_dir` is
  `$RLHF_ASSETS_DIR`, else, in a source checkout, `../shared/assets` beside the repo. With neither,
  it resolves to the literal `$RLHF_ASSETS_DIR` and `validate` refuses a config that needs it (one
  clear message naming the keys), while a config that never touches the assets runs as usual.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .errors import UserError

CONFIG_MODULE = "rlhf.conf"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"  # Hydra's config_path for the installed configs
ASSETS_ENV = "RLHF_ASSETS_DIR"
ASSETS_UNSET = f"${ASSETS_ENV}"  # what assets_dir resolves to when there are no assets to point at


def package_root() -> Path:
    """The directory the `rlhf` package is imported from: the repo root in a checkout or editable
    install, `site-packages` (or a `--target` dir) when installed from a wheel."""
    return Path(__file__).resolve().parent.parent


def source_checkout() -> Path | None:
    """The repo root when `rlhf` runs from a source checkout (editable install included), else None."""
    root = package_root()
    return root if (root / "pyproject.toml").is_file() and (root / "conf" / "config.yaml").is_file() else None


def _checkout_assets() -> Path | None:
    root = source_checkout()
    return (root.parent / "shared" / "assets").resolve() if root is not None else None


def assets_fallback() -> str:
    """`assets_dir` when $RLHF_ASSETS_DIR is unset: the checkout's ../shared/assets if it exists,
    else the literal `$RLHF_ASSETS_DIR` (caught by `assets_problems` where a value needs it)."""
    path = _checkout_assets()
    return str(path) if path is not None and path.is_dir() else ASSETS_UNSET


def pkg_dir(package: str, *parts: str) -> str:
    """`${pkg_dir:package,sub,dir}`: a folder inside an installed package (e.g. a packaged model)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return str(Path(list(spec.submodule_search_locations)[0], *parts))


def assets_problems(cfg: DictConfig) -> list[str]:
    """One line per config value that needs the embedded assets when there are none to point at."""
    if cfg.get("assets_dir") != ASSETS_UNSET:
        return []
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    keys = [k for k, v in _leaves(resolved) if k not in ("assets_dir",) and not k.startswith("hydra.")
            and isinstance(v, str) and v.startswith(ASSETS_UNSET)]
    if not keys:
        return []
    looked = _checkout_assets()
    where = f"and {looked} does not exist" if looked else "and this is an installed package (no source checkout)"
    return [f"{', '.join(keys)}: need the embedded assets (${{assets_dir}}), but {ASSETS_ENV} is not set {where}. "
            f"Set {ASSETS_ENV}=/path/to/assets (the folder holding models/ and data/), or assets_dir=..., "
            f"or point {keys[0]} at your own files"]


def _leaves(node, prefix: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], node
