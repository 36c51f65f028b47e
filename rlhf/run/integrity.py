"""What a stage checks of an artifact (rlhf.run.artifacts.Artifact) before it builds on it: the model and
tokenizer files its manifest names, weights that are all finite, and (for PPO) tokenizers that can
work together. (The manifest itself is checked by `rlhf.run.artifacts.parse_manifest`.)

Each problem is a UserError naming the file and what is wrong with it, raised before any model is
loaded, instead of a JSONDecodeError, an OSError from transformers or a quietly diverged model.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from ..errors import UserError

# The files one of which makes a tokenizer loadable (fast tokenizer, SentencePiece, BPE, WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def check_model_files(art, what: str) -> None:
    """The model, adapter and tokenizer folders the manifest names exist, their config files parse,
    and every weight is finite (NaN/inf weights mean the run that made them diverged)."""
    dirs = [d for d in (art.model_dir, art.adapter_dir, art.extra.get("value_dir")) if isinstance(d, str)]
    for rel in dirs:
        folder = art.path(rel)
        if not folder.is_dir():
            raise UserError(f"{what}: {folder} is missing (the manifest {art.run_dir}/artifact.json names it)")
    if art.model_dir and art.model_dir != art.adapter_dir:
        json_object(art.path(art.model_dir) / "config.json", what)
    if art.tokenizer_dir:
        _check_tokenizer(art.path(art.tokenizer_dir), what)
    for rel in dirs:
        weights = sorted(p for p in art.path(rel).iterdir() if p.suffix in WEIGHT_SUFFIXES)
        if not weights:
            raise UserError(f"{what}: {art.path(rel)} holds no weights (*.safetensors)")
        for f in weights:
            bad, total, first = _nonfinite(str(f), f.stat().st_size, f.stat().st_mtime_ns)
            if bad:
                raise UserError(f"{what}: {art.run_dir} has non-finite weights: {bad} of {total} tensors in {f} "
                                f"hold NaN or inf (first: {first}); the run that made them diverged. Retrain it "
                                "(e.g. with a lower learning rate) instead of building on it")


def nonfinite_tensors(folder: Path) -> list[str]:
    """Names of the floating-point tensors in `folder`'s weight files that hold NaN or inf."""
    out = []
    for f in sorted(p for p in Path(folder).iterdir() if p.suffix in WEIGHT_SUFFIXES):
        for name, t in _tensors(f):
            if t.is_floating_point() and not bool(t.isfinite().all()):
                out.append(name)
    return out


@functools.lru_cache(maxsize=64)
def _nonfinite(path: str, size: int, mtime_ns: int) -> tuple[int, int, str | None]:
    """(non-finite tensors, tensors, first bad name) of one weight file; cached per file version."""
    bad, total, first = 0, 0, None
    for name, t in _tensors(Path(path)):
        total += 1
        if t.is_floating_point() and not bool(t.isfinite().all()):
            bad += 1
            first = first or name
    return bad, total, first


def _tensors(path: Path):
    """(name, tensor) of a weight file, one tensor in memory at a time (safetensors), or a
    weights-only torch pickle. A damaged file is a UserError naming it."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    yield name, f.get_tensor(name)
            return
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # SafetensorError, UnpicklingError, RuntimeError: all mean "damaged file"
        raise UserError(f"{path} is damaged and cannot be read as weights ({type(e).__name__}: {e})") from None
    yield from ((k, v) for k, v in state.items() if isinstance(v, torch.Tensor))


def json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in `path`, or a UserError naming the file: missing, not JSON, or not an object."""
    if not path.is_file():
        raise UserError(f"{what}: {path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{what}: {path} is damaged (not valid JSON: {e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{what}: {path} is damaged (expected a JSON object, got {type(data).__name__})")
    return data


def _check_tokenizer(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise UserError(f"{what}: the tokenizer folder {folder} is missing")
    json_object(folder / "tokenizer_config.json", what)
    present = [n for n in TOKENIZER_FILES if (folder / n).is_file()]
    if not present:
        raise UserError(f"{what}: {folder} has no tokenizer files (expected tokenizer_config.json and one of "
                        f"{', '.join(TOKENIZER_FILES)})")
    if "tokenizer.json" in present:
        json_object(folder / "tokenizer.json", what)


def same_vocabulary(a, b) -> bool:
    """True when two tokenizers map every token to the same id (so one's ids mean the same to the other's
    model)."""
    return len(a) == len(b) and a.get_vocab() == b.get_vocab()
