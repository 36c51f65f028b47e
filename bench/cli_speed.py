"""P6: how long the CLI makes a user wait before anything trains (wall seconds, no peer).

`rlhf --cfg job` (print the composed config), `rlhf --help`, and `rlhf check` (the data preflight and
the memory estimate) on the embedded HH-RLHF pairs and on 10k / 100k / 1M rows made from them (each
row's dialogue prefixed with its copy number, so none is a duplicate; the 1M-row file keeps only the
first 200 characters of each text so the report fits in memory). Goals from the issue: --cfg job
and --help <= 1.5 s, check at 10k rows <= 10 s. Wall time is what a user waits; on a shared machine
it is inflated by the other programs, so the process CPU time is shown beside it. Unlike the
A/B benchmarks these run with the user's default threads (the tokenizer's Rust pool included).
"""

from __future__ import annotations

import json

from harness import ASSETS, RLHF, Context, Row, run, value_row
from prep import CACHE

HH = ASSETS / "data" / "hh-rlhf" / "harmless-base.jsonl"


def big_pairs(n: int, cut: int | None = None):
    path = CACHE / "data" / f"hh-{n}{'-cut' + str(cut) if cut else ''}.jsonl"
    if path.is_file():
        return path
    rows = [json.loads(line) for line in open(HH)]
    tmp = path.with_suffix(".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w") as f:
        for i in range(n):
            r = rows[i % len(rows)]
            tag = f"\n\nHuman: (copy {i})"
            chosen, rejected = tag + r["chosen"], tag + r["rejected"]
            if cut:
                chosen, rejected = chosen[:cut], rejected[:cut]
            f.write(json.dumps({"chosen": chosen, "rejected": rejected}) + "\n")
    tmp.rename(path)
    return path


def timed(ctx: Context, name: str, args: list[str], reps: int) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for i in range(reps):
        r = run([str(RLHF), *args], ctx.out / "p6" / f"{name}-{i}", timeout=3600, clock=False, one_thread=False)
        walls.append(r.wall)
        cpus.append(r.cpu)
    return walls, cpus


def p6_cli(ctx: Context) -> list[Row]:
    reps = ctx.reps(2, 5)
    cases = [("cfg-job", "rlhf --cfg job", ["--cfg", "job"], "<= 1.5", reps),
             ("help", "rlhf --help", ["--help"], "<= 1.5", reps),
             ("check-hh", "rlhf check stage=reward data=hh_rlhf (2k pairs)", ["check", "stage=reward", "data=hh_rlhf"],
              "", ctx.reps(1, 3)),
             ("check-10k", "rlhf check stage=reward, 10k pairs", ["check", "stage=reward", "data=hh_rlhf",
                                                                  f"data.source={big_pairs(10_000)}"], "<= 10", ctx.reps(1, 3))]
    if not ctx.quick:
        cases += [("check-100k", "rlhf check stage=reward, 100k pairs",
                   ["check", "stage=reward", "data=hh_rlhf", f"data.source={big_pairs(100_000)}"], "", 1),
                  ("check-1m", "rlhf check stage=reward, 1M pairs of <= 200 characters",
                   ["check", "stage=reward", "data=hh_rlhf", f"data.source={big_pairs(1_000_000, 200)}"], "", 1)]
    rows = []
    for name, what, args, goal, n in cases:
        walls, cpus = timed(ctx, name, args, n)
        rows.append(value_row("P6", f"{what}: wall", "s", walls, goal=goal,
                              note=f"CPU {min(cpus):.2f}-{max(cpus):.2f} s"))
    return rows
