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
    if (why := model_problem(art, what)) is not None:
        raise UserError(why)
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


def model_problem(art, what: str) -> str | None:
    """Why a loadable artifact's manifest cannot be loaded from: a policy or reward model whose
    `model_dir` / `tokenizer_dir` is null (None when both are set)."""
    if art.kind not in ("policy", "reward"):
        return None
    for key in ("model_dir", "tokenizer_dir"):
        if not getattr(art, key):
            return (f"{what}: {art.run_dir}/artifact.json: `{key}` is {json.dumps(getattr(art, key))}; a {art.kind} artifact names "
                    f"its {key.removesuffix('_dir')} folder there (e.g. \"model\"): the manifest is damaged, re-run that stage")
    return None


ARCH_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")


def check_same_model(model_cfg, art, what: str = "model.init_from") -> None:
    """`model=` (model.name_or_path) must be the model the init_from artifact holds: its config would
    otherwise describe weights it does not hold. Compared by architecture (config.json) when both are
    local folders (the same model at another path is fine), else by the artifact's base_model name."""
    given = str(model_cfg.name_or_path)
    if given == art.base_model:
        return
    mine, theirs = _arch(Path(given)), _arch(art.path(art.model_dir)) if art.model_dir else None
    if mine is not None and theirs is not None:
        if mine == theirs:
            return
        diff = ", ".join(f"{k} {theirs.get(k)} vs {mine.get(k)}" for k in ARCH_KEYS if theirs.get(k) != mine.get(k))
    else:  # a hub name or a missing folder on one side: the names decide
        diff = f"base_model {art.base_model!r} vs {given!r}"
    raise UserError(f"{what}: {art.run_dir} holds a model trained from {art.base_model} but model.name_or_path is {given} "
                    f"({diff}): the run would train one model and record another. Use the model= preset of the model that "
                    "run trained, or give init_from a run of this model")


def _arch(folder: Path) -> dict | None:
    path = Path(folder).expanduser() / "config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    return {k: text.get(k, cfg.get(k)) for k in ARCH_KEYS}
