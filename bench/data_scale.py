"""The data layer at corpus scale: peak memory and rows/s of `rlhf check` and `load_splits`.

    python bench/data_scale.py [--rows 100000,1000000] [--out DIR] [--max-length 512]

For each size it writes N short preference pairs to a Parquet file (distinct prompts, ~10-token
responses, like the 400k-pair file of issue 12), then runs, each in a fresh process:

- `rlhf check stage=reward data=jsonl data.kind=pair data.source=<file>` (the real CLI: reading,
  validation, duplicates, the reward stage's encoder, the report, the model-memory estimate);
- `load_splits(cfg, RewardEncoder(tokenizer, max_length))`, what the reward stage does before it
  builds a model: the same pass plus the split and the Arrow datasets the trainer gets;
- the same `rlhf check` on 1,000 pairs, the fixed cost (imports, tokenizer, memory estimate).

Peak RSS is the child's own `ru_maxrss` (os.wait4), so each figure is one process's high-water
mark, imports included. rows/s divides the rows by the process's whole wall time (imports too).
Run it on a quiet machine: the figures are throughput, and other load slows them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANIMALS = ("cat", "dog", "bird", "fox", "bear", "fish", "frog", "duck")
MOODS = ("happy", "sad", "sleepy", "brave", "silly", "kind")


def write_pairs(path: Path, n: int) -> None:
    """n distinct short pairs, written in row groups of 100k (no list of n rows in memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    for start in range(0, n, 100_000):
        ids = range(start, min(n, start + 100_000))
        a = [ANIMALS[i % len(ANIMALS)] for i in ids]
        m = [MOODS[(i // 7) % len(MOODS)] for i in ids]
        table = pa.table({
            "prompt": [f"Tell me about the {x} number {i}." for x, i in zip(a, ids, strict=True)],
            "chosen": [f" The {x} was {y} and played all day." for x, y in zip(a, m, strict=True)],
            "rejected": [f" The {x} sat." for x in a],
        })
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """(wall s, peak RSS MiB, exit code, the last lines of output) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, proc.returncode, out


def load_splits_worker(source: str, assets: str, max_length: int) -> None:
    """In a child process: what the reward stage does with its data before building a model."""
    from transformers import AutoTokenizer

    from rlhf.data import DataConfig, RewardEncoder, load_splits

    tok = AutoTokenizer.from_pretrained(Path(assets) / "models" / "stories260k")
    splits = load_splits(DataConfig(kind="pair", source=source, format="canonical"), RewardEncoder(tok, max_length))
    first = splits.train_features[0]
    print(json.dumps({"ledger": splits.ledger.as_dict(), "train_features": len(splits.train_features),
                      "first_chosen_ids": len(first["chosen_ids"])}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--out", default=None, help="where the Parquet files go (default: a temporary directory)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--assets", default=os.environ.get("RLHF_ASSETS_DIR", str(ROOT.parent / "shared" / "assets")))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return load_splits_worker(a.worker, a.assets, a.max_length)

    out = Path(a.out or tempfile.mkdtemp(prefix="rlhf-bench-data-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RLHF_ASSETS_DIR": a.assets, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "WANDB_MODE": "disabled", "RLHF_RUNS_DIR": str(out / "runs")}
    rlhf = str(Path(sys.executable).parent / "rlhf")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', '(unset: parallel)')}")
    print(f"{'rows':>9}  {'what':<46} {'wall s':>7} {'rows/s':>8} {'peak RSS MiB':>13}")
    for n in [1000] + [int(x) for x in a.rows.split(",")]:
        path = out / f"pairs-{n}.parquet"
        if not path.exists():
            write_pairs(path, n)
        runs = [("rlhf check stage=reward", [rlhf, "check", "stage=reward", "data=jsonl", "data.kind=pair",
                                             f"data.source={path}", f"model.max_length={a.max_length}", "logger=none"])]
        if n > 1000:
            runs.append(("load_splits(cfg, RewardEncoder)", [sys.executable, __file__, "--worker", str(path),
                                                             "--assets", a.assets, "--max-length", str(a.max_length)]))
        for what, cmd in runs:
            wall, rss, code, text = measure(cmd, env)
            label = what + (" (fixed cost)" if n == 1000 else "")
            print(f"{n:>9}  {label:<46} {wall:>7.1f} {n / wall:>8.0f} {rss:>13.0f}", flush=True)
            if code != 0:
                print(text[-3000:])
                raise SystemExit(f"{what} on {n} rows exited {code}")
    print(f"files: {out}")


if __name__ == "__main__":
    main()
