"""The benchmark suite: ours side by side with plain TRL, one table of per-pair ratios.

    make bench                       # everything: about 75 minutes on 2 quiet cores (use a quiet machine)
    make bench ARGS=--quick          # every ratio at toy sizes: about 40 fresh processes, 8-10 minutes on
                                     # 2 quiet cores (each pays ~9 CPU-s of torch/transformers/TRL imports)
    .venv/bin/python bench/run.py --only p1,p6 [--pairs 3] [--quick]

Each benchmark runs ours (the real `rlhf` CLI) and its peer (a plain TRL/transformers script in
bench/peers/, or the alternative setting it is compared with) in alternating A/B repetitions, each
side a fresh process with one compute thread, and reports the median and min-max of the per-pair
ratio ours / peer. Times are process CPU seconds (user + system), which the other programs on a
shared machine disturb far less than wall time. The table, JSON and markdown go to
runs/bench/<time>/ (results.json, results.md; each side's log and step clock beside them).

How to read a ratio: for costs (CPU per step, start-up), < 1 means ours is cheaper; for rates
(tokens/s, comparisons/s) and speed-ups, the row says which way is better. The goal column is
the issue's target; "met"/"MISSED" compares the median with it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cli_speed  # noqa: E402
import defaults  # noqa: E402
import generation  # noqa: E402
import kwise  # noqa: E402
import online  # noqa: E402
import overhead  # noqa: E402
from harness import ROOT, Context, Row  # noqa: E402

# name -> (function(ctx) -> rows, what it answers). A plain dict: --only picks by name.
BENCHMARKS = {
    "p1": (overhead.p1_overhead, "framework cost per optimizer step and at start-up, sft/reward/dpo"),
    "p2": (defaults.p2_defaults, "what our defaults buy: SFT grouped batching, DPO precomputed reference"),
    "p3": (kwise.p3_kwise, "K-wise ranked loss vs the same lists expanded to pairs"),
    "p5": (online.p5_online, "PPO time shares, rollout tokens/s, cost per completion vs GRPO"),
    "scaling": (overhead.scaling, "per-step ratio as the model and the length grow"),
    "p6": (cli_speed.p6_cli, "rlhf --cfg job / --help / check at 10k-1M rows"),
    "p8": (generation.p8_generation, "rollout tokens/s and PPO iteration time, vLLM engine vs HF generate"),
}


def fmt(x, digits=3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


def table(rows: list[Row]) -> list[list[str]]:
    head = ["bench", "measurement", "ours", "peer", "ours/peer (median)", "min-max", "n", "goal", ""]
    body = []
    for r in rows:
        lo_hi = r.spread
        span = "-" if lo_hi is None else f"{fmt(lo_hi[0])}-{fmt(lo_hi[1])}" + (f" {r.unit}" if r.values else "")
        met = {None: "", True: "met", False: "MISSED"}[r.met]
        unit = f" {r.unit}" if r.unit else ""
        body.append([r.bench, r.measure + (f" [{r.note}]" if r.note else ""),
                     fmt(r.ours) + unit if r.ours is not None else "-", fmt(r.peer) + unit if r.peer is not None else "-",
                     f"{r.median:.3f}" if r.median is not None else "-", span, str(len(r.ratios or r.values)),
                     r.goal, met])
    return [head, *body]


def text_table(cells: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(cells: list[list[str]]) -> str:
    out = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells[1:]]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="toy sizes and fewer pairs: every ratio in minutes")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    ap.add_argument("--pairs", type=int, default=None, help="A/B repetitions per measurement (default: each's own)")
    ap.add_argument("--out", type=Path, default=None, help="default runs/bench/<time>")
    a = ap.parse_args(argv)
    names = [n for n in a.only.split(",") if n] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    out = a.out or ROOT / "runs" / "bench" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    ctx = Context(quick=a.quick, out=out, n_pairs=a.pairs)
    out.mkdir(parents=True, exist_ok=True)
    rows, failed, t0 = [], {}, time.perf_counter()
    for name in names:
        fn, what = BENCHMARKS[name]
        print(f"== {name}: {what}", flush=True)
        t = time.perf_counter()
        try:
            got = fn(ctx)
        except Exception as e:  # one broken benchmark must not hide the others' figures
            failed[name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            continue
        rows += got
        print(text_table(table(got)), f"\n({time.perf_counter() - t:.0f} s)\n", flush=True)
    cells = table(rows)
    header = (f"bench/run.py{' --quick' if a.quick else ''}: {len(rows)} measurements in "
              f"{time.perf_counter() - t0:.0f} s; ratio = ours / peer per A/B pair; CPU seconds, one thread a side")
    print("\n" + header + "\n" + text_table(cells))
    for name, err in failed.items():
        print(f"FAILED {name}: {err.splitlines()[0]}")
    (out / "results.json").write_text(json.dumps({"quick": a.quick, "benchmarks": names, "failed": failed,
                                                  "rows": [r.as_dict() for r in rows]}, indent=2))
    (out / "results.md").write_text(header + "\n\n" + markdown(cells) + "\n")
    print(f"\nwritten: {out / 'results.json'}, {out / 'results.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
