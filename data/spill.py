"""Valid rows and their trainer features, written to Arrow chunk by chunk instead of kept in lists.

`load_splits` cannot split before it has seen every row (the split ranks all rows by a keyed hash),
so each chunk's valid rows (as JSON text) and features go to disk as they come, and `finish` sorts
them into train and eval files in one streaming pass. The trainer gets memory-mapped
`datasets.Dataset`s of those files; rows come back as a `Rows` sequence that decodes on access.
The directory lives as long as any of them and is removed after.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


class WorkDir:
    """A temporary directory removed when the last object that holds this handle is gone (or at exit)."""

    def __init__(self, parent: str | Path | None = None):
        self.path = Path(tempfile.mkdtemp(prefix="rlhf-data-", dir=parent))
        weakref.finalize(self, shutil.rmtree, self.path, True)


class Rows(Sequence):
    """Canonical rows stored as JSON texts in a memory-mapped Arrow column, decoded on access.

    A read-only sequence of dicts: indexing, iteration, `len`, `in`, `+` (gives a list) and `==`
    with any sequence of dicts behave as they would on the list of the same rows."""

    def __init__(self, column: pa.ChunkedArray | None, positions: np.ndarray, workdir: WorkDir | None = None):
        self._column, self._positions, self._workdir = column, positions, workdir

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return json.loads(self._column[int(self._positions[i])].as_py())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._column is None:
            return
        offset, positions = 0, self._positions
        for chunk in self._column.chunks:
            lo, hi = np.searchsorted(positions, [offset, offset + len(chunk)])
            if hi > lo:
                for text in chunk.take(pa.array(positions[lo:hi] - offset)).to_pylist():
                    yield json.loads(text)
            offset += len(chunk)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable-sequence semantics: compared by content

    def __add__(self, other: Sequence) -> list[dict[str, Any]]:
        return list(self) + list(other)

    def __radd__(self, other: Sequence) -> list[dict[str, Any]]:
        return list(other) + list(self)

    def __repr__(self) -> str:
        return f"Rows({len(self)} rows)"


class Spill:
    """Collects valid rows (and features) chunk by chunk in `workdir`; `finish` splits them."""

    def __init__(self, workdir: WorkDir):
        self.workdir = workdir
        self.rows_path = workdir.path / "rows.arrow"
        self._rows_writer: pa.ipc.RecordBatchStreamWriter | None = None
        self.feature_files: list[Path] = []
        self.sizes: list[int] = []

    def add(self, rows: list[dict[str, Any]], features: list[dict[str, Any]] | None) -> None:
        """One chunk's valid rows, in order, and their features (None without an encoder)."""
        if not rows:
            return
        batch = pa.record_batch([pa.array([json.dumps(r, ensure_ascii=False) for r in rows], pa.large_string())],
                                names=["row"])
        if self._rows_writer is None:
            self._rows_writer = pa.ipc.new_stream(str(self.rows_path), batch.schema)
        self._rows_writer.write_batch(batch)
        if features is not None:
            path = self.workdir.path / f"features-{len(self.feature_files):05d}.arrow"
            keys = dict.fromkeys(k for f in features for k in f)  # every key of the chunk, not the first row's
            _write(path, pa.table({k: [f.get(k) for f in features] for k in keys}))
            self.feature_files.append(path)
        self.sizes.append(len(rows))

    def finish(self, is_eval: np.ndarray, keep: np.ndarray | None = None) -> tuple[Rows, Rows, Any, Any]:
        """(train rows, eval rows, train features, eval features): `is_eval` has one flag per row added
        (`keep`, if given, False for rows in neither split); features are memory-mapped
        `datasets.Dataset`s (None when no features were added)."""
        keep = np.ones(len(is_eval), dtype=bool) if keep is None else keep
        column = None
        if self._rows_writer is not None:
            self._rows_writer.close()
            column = pa.ipc.open_stream(pa.memory_map(str(self.rows_path))).read_all()["row"]
        train = Rows(column, np.flatnonzero(~is_eval & keep), self.workdir)
        evals = Rows(column, np.flatnonzero(is_eval & keep), self.workdir)
        if not self.feature_files:
            return train, evals, None, None
        return train, evals, *self._split_features(is_eval, keep)

    def _split_features(self, is_eval: np.ndarray, keep: np.ndarray) -> tuple[Any, Any]:
        from datasets import Dataset

        schemas = [_read(p).schema for p in self.feature_files]
        # A column only some chunks have (e.g. `margin`) is null elsewhere; list<null> from an
        # all-empty chunk widens to the others' type.
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        out = {side: pa.ipc.new_stream(str(self.workdir.path / f"{side}.arrow"), schema) for side in ("train", "eval")}
        offset = 0
        for path, n in zip(self.feature_files, self.sizes, strict=True):
            table = _conform(_read(path), schema)
            flags, kept = is_eval[offset : offset + n], keep[offset : offset + n]
            out["eval"].write_table(table.filter(pa.array(flags & kept)))
            out["train"].write_table(table.filter(pa.array(~flags & kept)))
            path.unlink()
            offset += n
        datasets = []
        for side, writer in out.items():
            writer.close()
            ds = Dataset.from_file(str(self.workdir.path / f"{side}.arrow"))
            ds._rlhf_workdir = self.workdir  # the files live as long as the dataset does
            datasets.append(ds)
        return datasets[0], datasets[1]


def _read(path: Path) -> pa.Table:
    with pa.OSFile(str(path)) as f:  # read into memory (one chunk), not mapped: the file is deleted next
        return pa.ipc.open_stream(f).read_all()


def _write(path: Path, table: pa.Table) -> None:
    with pa.ipc.new_stream(str(path), table.schema) as writer:
        writer.write_table(table)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s columns in its order: missing ones as nulls, types widened."""
    have = set(table.column_names)
    columns = [(table[f.name] if f.name in have else pa.nulls(len(table), f.type)).cast(f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)
