"""Opening `datasets` sources: hub datasets (or local dataset folders) and `save_to_disk` folders.

Both give a memory-mapped `datasets.Dataset` that `sources` reads in Arrow batches, so a corpus
larger than memory is never loaded whole. Everything a user can fix (an unknown configuration,
split or revision, no network, a folder that is not a saved dataset) is one UserError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.errors import UserError, did_you_mean

# Files `datasets.save_to_disk` writes: a Dataset folder, or a DatasetDict folder of split folders.
SAVED_DATASET = "state.json"
SAVED_DICT = "dataset_dict.json"


def load_hub(name: str, split: str, config: str | None, revision: str | None, data_files: Any) -> Any:
    """`datasets.load_dataset(name, config, split=split, revision=..., data_files=...)` (Arrow-backed)."""
    import datasets

    where = "".join(f", {k} {v!r}" for k, v in (("config", config), ("revision", revision), ("data_files", data_files))
                    if v is not None)
    try:
        return datasets.load_dataset(name, config, split=split, revision=revision, data_files=data_files)
    except Exception as e:  # not found, no network, unknown config or split: all fixable by the user
        raise UserError(
            f"data.source: hf:{name} (split {split!r}{where}) cannot be loaded: {type(e).__name__}: {e}"
        ) from None


@dataclass
class Saved:
    dataset: Any  # datasets.Dataset
    split_named: bool  # True when the folder held a DatasetDict and `split` chose one of its splits


def load_saved(path: Path, source: str, split: str) -> Saved:
    """The Dataset of a `save_to_disk` folder: the folder itself, or split `split` of a DatasetDict."""
    if not (path / SAVED_DATASET).is_file() and not (path / SAVED_DICT).is_file():
        raise UserError(
            f"data.source: {source} is a directory, but not one written by datasets' save_to_disk (no "
            f"{SAVED_DATASET} or {SAVED_DICT}); give a file, or hf:{source} to read a folder of data files"
        )
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # a damaged or foreign folder
        raise UserError(f"data.source: {source}: load_from_disk failed: {type(e).__name__}: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(f"data.hf_split / data.eval_split: {source} has no split {split!r}; its splits: "
                            f"{', '.join(ds)}{did_you_mean(split, list(ds))}")
        return Saved(ds[split], True)
    return Saved(ds, False)
