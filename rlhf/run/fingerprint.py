"""A run records what it trained: the data's content fingerprint, in the run dir, the manifest, the
lineage and the resume check.

The fingerprint is computed in the one data pass (`rlhf.data.stream`: a streaming hash of every
record read, with its side) and handed here by `rlhf.stages.inputs.load_data`. `begin` then

- on a relaunch onto checkpoints, compares it with the one the interrupted run recorded in
  `data.json`: different data is refused (steps 1..N would have trained on other rows than N+1..),
  unless `resume.allow_config_change=true`, which is recorded in the manifest (`extra.resume`);
- writes `data_fingerprint.json` (`{"source", "fingerprint", "rows"}`) into the run dir.

`finish` puts the same record in the manifest (`extra.data`) and in this run's lineage entry.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import UserError

log = logging.getLogger(__name__)

DATA_RECORD = "data_fingerprint.json"
_seen: dict[int, tuple[Any, dict[str, Any]]] = {}  # id(cfg) of a stage being run -> (cfg, its data record)


def remember(cfg, splits) -> None:
    """What `cfg`'s stage read: called once the data pass is done."""
    _seen[id(cfg)] = cfg, {"source": str(splits.source), "fingerprint": splits.fingerprint,
                      "rows": {"read": splits.ledger.read, "train": splits.ledger.train, "eval": splits.ledger.eval}}  # cfg held: its id is not reused meanwhile


def record_of(cfg) -> dict[str, Any] | None:
    held = _seen.get(id(cfg))
    return held[1] if held is not None and held[0] is cfg else None


def read(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / DATA_RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"fingerprint": "<unreadable data_fingerprint.json>"}
    return data if isinstance(data, dict) else {"fingerprint": "<unreadable data_fingerprint.json>"}


def check_and_record(cfg, run_dir: Path, has_checkpoints: bool) -> dict[str, Any] | None:
    """Refuse a resume onto other data (unless allowed: then what changed, for the manifest); write
    this run's data record. None when there is nothing to say."""
    from .artifacts import write_json_atomic

    now = record_of(cfg)
    if now is None:
        return None
    before = read(run_dir)
    info = None
    if has_checkpoints and before is not None and before.get("fingerprint") != now["fingerprint"]:
        what = (f"run_dir {run_dir} holds an interrupted run trained on other data: {before.get('source')} had "
                f"fingerprint {before.get('fingerprint')}, {now['source']} now has {now['fingerprint']} "
                f"({before.get('rows', {}).get('read', '?')} -> {now['rows']['read']} records)")
        if not bool(cfg.resume.allow_config_change):
            raise UserError(f"{what}. Restore the data to resume, pick a new run_dir to start over, or set "
                            "resume.allow_config_change=true to resume on the new data (recorded in the manifest)")
        log.warning("%s: resuming on the new data (resume.allow_config_change=true)", what)
        info = {"data_changed": True, "data_fingerprint_before": before.get("fingerprint")}
    write_json_atomic(Path(run_dir) / DATA_RECORD, now)
    return info


def forget(cfg) -> None:
    _seen.pop(id(cfg), None)
