"""The data fingerprint (rlhf.data.stream.Tally.fingerprint): a content hash of the records a run reads,
computed in the one data pass. The file's key order and whitespace do not change it; any value, a
row more or less, or `max_rows` reading fewer rows does."""

from __future__ import annotations

import json

from rlhf.data import DataConfig, load_splits

ROWS = [{"prompt": f"Once upon a time {i}.", "completion": f" The end {i}."} for i in range(10)]


def _fingerprint(path, rows, text=None, **cfg) -> str:
    path.write_text(text if text is not None else "".join(json.dumps(r) + "\n" for r in rows))
    return load_splits(DataConfig(kind="sft", source=str(path), format="canonical", **cfg)).fingerprint


def test_the_fingerprint_follows_the_content_not_the_layout(tmp_path):
    f = tmp_path / "x.jsonl"
    base = _fingerprint(f, ROWS)
    assert base.startswith("blake2b:") and base == _fingerprint(f, ROWS)
    reordered = "".join(json.dumps(dict(reversed(list(r.items()))), indent=None, separators=(" ,", " : ")) + "\n"
                        for r in ROWS)
    assert _fingerprint(f, ROWS, text=reordered) == base  # key order and spacing are layout
    assert _fingerprint(f, [{**ROWS[0], "completion": " The end!"}, *ROWS[1:]]) != base  # one value
    assert _fingerprint(f, ROWS[:-1]) != base  # one row fewer
    assert _fingerprint(f, ROWS, max_rows=5) != base  # what is read, not what the file holds
    assert _fingerprint(f, ROWS, max_rows=5) == _fingerprint(f, ROWS[:5])
