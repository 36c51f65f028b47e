"""Reading raw records from a local file or the Hugging Face hub, each with its origin.

A missing file or an unreadable source is a config mistake and raises at once; a single bad line
is a data problem and is returned as a `RowError` so that it is reported with all the others.
Heavy readers (pyarrow, datasets) are imported only when such a source is used.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from rlhf.errors import UserError

from .rows import Origin, RowError

HF_PREFIX = "hf:"
EXTENSIONS = (".jsonl", ".jsonl.gz", ".json", ".parquet")

Raw = tuple[Origin, dict[str, Any] | RowError]


def read_source(source: str, hf_split: str = "train", max_rows: int | None = None) -> list[Raw]:
    """All raw records of `source` (at most `max_rows`), as (origin, record or the reason it is unusable)."""
    if source.startswith(HF_PREFIX):
        return list(_read_hf(source[len(HF_PREFIX) :], hf_split, max_rows))
    path = Path(source).expanduser()
    if not path.is_file():
        where = f" (resolved to {path.resolve()})" if not path.is_absolute() else ""
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise UserError(f"data.source: {source}{where} {what}")
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        records = _read_jsonl(path)
    elif name.endswith(".json"):
        records = _read_json(path)
    elif name.endswith(".parquet"):
        records = _read_parquet(path)
    else:
        raise UserError(
            f"data.source: {source}: unsupported file type; expected one of {', '.join(EXTENSIONS)}"
        )
    try:
        return list(islice(records, max_rows))
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
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield origin, RowError("unparsable", "row", f"not valid JSON ({e.msg} at column {e.colno})")
                continue
            yield origin, _as_object(record)


def _read_json(path: Path) -> Iterator[Raw]:
    """A whole-file JSON list of objects; records are numbered from 1."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                        "save the file as UTF-8") from None
    except json.JSONDecodeError as e:
        hint = " (one object per line? name the file .jsonl)" if e.msg == "Extra data" else ""
        raise UserError(f"{path}:{e.lineno}: not valid JSON: {e.msg}{hint}") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for number, record in enumerate(data, start=1):
        yield Origin(path.name, number, "row"), _as_object(record)


def _read_parquet(path: Path) -> Iterator[Raw]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid and friends for a file that is not parquet
        raise UserError(f"{path}: cannot read as parquet: {e}") from None
    number = 0
    try:
        for batch in parquet.iter_batches():
            for record in batch.to_pylist():
                number += 1
                yield Origin(path.name, number, "row"), record
    except Exception as e:  # a damaged row group: pyarrow's ArrowInvalid / OSError
        raise UserError(f"{path}: damaged parquet after row {number}: {e}") from None


def _read_hf(name: str, split: str, max_rows: int | None) -> Iterator[Raw]:
    """A hub dataset (or a local dataset folder) through `datasets.load_dataset`."""
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # not found, no network, unknown split: all fixable by the user
        raise UserError(
            f"data.source: hf:{name} (split {split!r}) cannot be loaded: {type(e).__name__}: {e}"
        ) from None
    if max_rows is not None:
        ds = ds.select(range(min(max_rows, len(ds))))
    label = f"hf:{name}[{split}]"
    for number, record in enumerate(ds, start=1):
        yield Origin(label, number, "row"), record


def _as_object(record: Any) -> dict[str, Any] | RowError:
    if isinstance(record, dict):
        return record
    return RowError("unparsable", "row", f"expected a JSON object, got {type(record).__name__}")
