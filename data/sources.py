"""Reading raw records from a local file, a `save_to_disk` folder or the Hugging Face hub, in chunks.

Every reader streams: it yields lists of at most `chunk` records, each with its origin, and holds
no more than one chunk (Parquet row groups and `datasets` Arrow files are read batch by batch,
memory-mapped; JSONL line by line). Only a whole-file `.json` list is parsed at once.
A missing file or an unreadable source is a config mistake and raises at once; a single bad line
is a data problem and is returned as a `RowError` so that it is reported with all the others.
`data.columns` renames raw columns before the format's converter sees them. Heavy readers
(pyarrow, datasets) are imported only when such a source is used.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from rlhf.errors import UserError

from .config import FILE_SUFFIXES as EXTENSIONS
from .config import HF_PREFIX
from .rows import Origin, RowError

Raw = tuple[Origin, dict[str, Any] | RowError]
CHUNK = 10_000  # records per chunk: big enough for batched tokenisation, small enough to hold (~10-50 MB)


@dataclass
class Source:
    """One split of a source: its label in messages, its size when known, and its records in chunks."""

    label: str
    total: int | None  # raw records, when known before reading (Parquet metadata, Arrow datasets)
    chunks: Iterator[list[Raw]]
    has_splits: bool = False  # the split was chosen from several (hf:, a save_to_disk DatasetDict)


def read_source(source: str, hf_split: str = "train", max_rows: int | None = None) -> list[Raw]:
    """All raw records of `source` (at most `max_rows`) in one list: for small sources and tests."""
    return [raw for chunk in open_source(source, hf_split, max_rows=max_rows).chunks for raw in chunk]


def open_source(source: str, split: str = "train", *, max_rows: int | None = None, columns: dict | None = None,
                hf_config: str | None = None, revision: str | None = None, data_files: Any = None,
                chunk: int | None = None) -> Source:
    """The records of one split of `source` (at most `max_rows`), read lazily in chunks of `chunk`.

    source: a .jsonl(.gz) / .json / .parquet file (which has no splits: `split` is ignored), a folder
    written by `datasets.save_to_disk` (a Dataset, or a DatasetDict and its `split`), or
    hf:<hub name or local folder> through `datasets.load_dataset(name, hf_config, split=split,
    revision=..., data_files=...)`. Raises UserError for a source that cannot be opened."""
    chunk = chunk or CHUNK
    if source.startswith(HF_PREFIX):
        from .hub import load_hub

        ds = load_hub(source[len(HF_PREFIX) :], split, hf_config, revision, data_files)
        return _arrow_source(f"{source}[{split}]", ds, max_rows, columns, chunk, has_splits=True)
    path = Path(source).expanduser()
    if path.is_dir():
        from .hub import load_saved

        saved = load_saved(path, source, split)
        label = f"{path.name}[{split}]" if saved.split_named else path.name
        return _arrow_source(label, saved.dataset, max_rows, columns, chunk, has_splits=saved.split_named)
    if not path.is_file():
        where = f" (resolved to {path.resolve()})" if not path.is_absolute() else ""
        raise UserError(f"data.source: {source}{where} does not exist")
    name = path.name.lower()
    if name.endswith(".parquet"):
        return _parquet_source(path, max_rows, columns, chunk)
    if name.endswith((".jsonl", ".jsonl.gz")):
        records = _read_jsonl(path)
    elif name.endswith(".json"):
        records = _read_json(path)
    else:
        raise UserError(
            f"data.source: {source}: unsupported file type; expected one of {', '.join(EXTENSIONS)}, a folder "
            "written by datasets' save_to_disk, or hf:<dataset>"
        )
    if columns:
        records = (_renamed(origin, record, columns) for origin, record in records)
    return Source(path.name, None, _batched(islice(records, max_rows), chunk, source))


def _batched(records: Iterator[Raw], n: int, source: str) -> Iterator[list[Raw]]:
    """Chunks of a file's records; a damaged gzip stream or a read error is one UserError naming the file."""
    try:
        while batch := list(islice(records, n)):
            yield batch
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UserError(
            f"data.source: {source}: not a readable gzip file ({e}); a .gz file must be gzip-compressed "
            "and complete (plain text? name it .jsonl)"
        ) from None
    except OSError as e:
        raise UserError(f"data.source: {source}: cannot be read ({e})") from None


def _read_jsonl(path: Path) -> Iterator[Raw]:
    """One record per non-blank line; line numbers are 1-based as in an editor. Lines are decoded
    one by one, so a line that is not UTF-8 is a bad row (file:line), not a failed read."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            origin = Origin(path.name, number)
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a leading BOM is fine
            except UnicodeDecodeError as e:
                yield origin, RowError("unparsable", "", f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                                         f"{e.start + 1}); save the file as UTF-8")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as e:
                yield origin, RowError("unparsable", "row", f"not valid JSON ({e.msg} at column {e.colno})")
                continue
            except _DuplicateKey as e:
                yield origin, e.row_error()
                continue
            yield origin, _as_object(record)


class _DuplicateKey(Exception):
    def __init__(self, key: str, where: str = ""):
        self.key, self.where = key, where

    def row_error(self) -> RowError:
        return RowError("duplicate_key", self.key, "given twice in one JSON object (json would keep the last value "
                                                   "silently); keep one")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: a dict, refusing a key given twice (json.loads keeps the last silently)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


class _Marked(dict):
    """A JSON object that gave `duplicate` twice (whole-file .json: found per record after parsing)."""

    duplicate = ""


def _marking_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        marked = _Marked(out)
        marked.duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        return marked
    return out


def _duplicate_in(x: Any) -> str | None:
    if isinstance(x, _Marked):
        return x.duplicate
    items = x.values() if isinstance(x, dict) else x if isinstance(x, list) else ()
    return next((d for d in map(_duplicate_in, items) if d is not None), None)


def _read_json(path: Path) -> Iterator[Raw]:
    """A whole-file JSON list of objects; records are numbered from 1."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=_marking_keys)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                        "save the file as UTF-8") from None
    except json.JSONDecodeError as e:
        hint = " (one object per line? name the file .jsonl)" if e.msg == "Extra data" else ""
        raise UserError(f"{path}:{e.lineno}: not valid JSON: {e.msg}{hint}") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for number, record in enumerate(data, start=1):
        key = _duplicate_in(record)
        yield Origin(path.name, number, "row"), _as_object(record) if key is None else _DuplicateKey(key).row_error()


def _parquet_source(path: Path, max_rows: int | None, columns: dict | None, chunk: int) -> Source:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid and friends for a file that is not parquet
        raise UserError(f"{path}: cannot read as parquet: {e}") from None
    names = _arrow_names(parquet.schema_arrow.names, columns, path.name)
    total = parquet.metadata.num_rows if max_rows is None else min(max_rows, parquet.metadata.num_rows)
    batches = (b.rename_columns(names).to_pylist() for b in parquet.iter_batches(batch_size=chunk))
    return Source(path.name, total, _numbered(batches, path.name, max_rows))


def _arrow_source(label: str, ds: Any, max_rows: int | None, columns: dict | None, chunk: int,
                  has_splits: bool) -> Source:
    """A memory-mapped `datasets.Dataset`, read in batches with its own formatting (as iterating it would)."""
    names = _arrow_names(ds.column_names, columns, label)
    if max_rows is not None and max_rows < len(ds):
        ds = ds.select(range(max_rows))
    order = list(ds.column_names)
    batches = ([dict(zip(names, values, strict=True)) for values in zip(*(b[c] for c in order), strict=True)]
               for b in ds.iter(batch_size=chunk))
    return Source(label, len(ds), _numbered(batches, label, max_rows), has_splits)


def _numbered(batches: Iterator[list[dict[str, Any]]], label: str, max_rows: int | None) -> Iterator[list[Raw]]:
    """Records in chunks, each with its 1-based row number; at most `max_rows` in all."""
    number = 0
    batches = iter(batches)
    while True:
        try:
            records = next(batches, None)
        except UserError:
            raise
        except Exception as e:  # a damaged Parquet row group or Arrow file: pyarrow's ArrowInvalid / OSError
            raise UserError(f"{label}: damaged data after row {number}: {e}") from None
        if records is None:
            return
        if max_rows is not None:
            records = records[: max_rows - number]
        yield [(Origin(label, number + i, "row"), r) for i, r in enumerate(records, start=1)]
        number += len(records)
        if max_rows is not None and number >= max_rows:
            return


def _arrow_names(names: list[str], columns: dict | None, label: str) -> list[str]:
    """The column names after `data.columns`, refusing a column that is not there or a clash."""
    if not columns:
        return list(names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise UserError(f"data.columns: {label} has no column {', '.join(map(repr, missing))} "
                        f"(its columns: {', '.join(names)})")
    renamed = [columns.get(c, c) for c in names]
    clash = sorted({n for n in renamed if renamed.count(n) > 1})
    if clash:
        raise UserError(f"data.columns: {label} already has a column {', '.join(map(repr, clash))}; map that "
                        "one to another name as well")
    return renamed


def _renamed(origin: Origin, record: dict[str, Any] | RowError, columns: dict[str, str]) -> Raw:
    """A JSON record with `data.columns` applied (a mapped name the record already has is a row problem)."""
    if isinstance(record, RowError):
        return origin, record
    out = {columns.get(k, k): v for k, v in record.items()}
    if len(out) < len(record):
        clash = next(t for k, t in columns.items() if k in record and t in record and t not in columns)
        return origin, RowError("bad_value", clash, f"data.columns maps another field to {clash!r}, but the row "
                                                    f"has {clash!r} too")
    return origin, out


def _as_object(record: Any) -> dict[str, Any] | RowError:
    if isinstance(record, dict):
        return record
    return RowError("unparsable", "row", f"expected a JSON object, got {type(record).__name__}")
