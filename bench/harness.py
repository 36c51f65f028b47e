"""What every benchmark of bench/run.py shares: running a side in its own process, reading its step
clock, A/B pairs, ratio statistics, and the result rows of the table.

Each side runs as a child process with one compute thread (OMP/MKL threads 1, tokenizers
sequential), the step clock on PYTHONPATH (bench/clock/sitecustomize.py) and the Hub offline. Its
CPU time is the child's own user + system time from `os.wait4` (not wall time, which the other
sessions on a shared machine inflate); its per-step CPU comes from the clock.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
ASSETS = Path(os.environ.get("RLHF_ASSETS_DIR", ROOT.parent / "shared" / "assets")).resolve()
RLHF = Path(sys.executable).parent / "rlhf"  # the console script a user runs


class BenchError(RuntimeError):
    pass


@dataclass
class Run:
    """One finished side: whole-process CPU and wall seconds, its step clock, its output folder."""

    cpu: float
    wall: float
    clock: dict[str, Any]
    out: Path

    @property
    def trainer(self) -> dict[str, Any]:
        trainers = self.clock.get("trainers") or []
        if not trainers:
            raise BenchError(f"{self.out}: no Trainer ran in this process")
        return max(trainers, key=lambda t: len(t["steps"]))  # the one that trained

    def step_cpus(self) -> list[float]:
        """CPU seconds of each optimizer step (from the end of the previous one), evaluations removed."""
        t = self.trainer
        points = [t["begin"]] + t["steps"] if t["begin"] else t["steps"]
        out = []
        for (_, c0, _), (_, c1, _) in zip(points, points[1:], strict=False):
            evals = sum(e["cpu"] for e in t["evals"] if c0 <= e["at"][0] < c1)
            out.append(c1 - c0 - evals)
        return out

    def step_cpu(self, warmup: int | None = None) -> float:
        """Mean CPU per optimizer step after the warm-up steps (the first pay lazy initialisation and
        allocator growth: 1 of up to 5 steps, else 2). Both sides of a pair see the same batches in
        the same order (same rows, sampler and seed), so the means compare like with like."""
        steps = self.step_cpus()
        if warmup is None:
            warmup = 1 if len(steps) <= 5 else 2
        steady = steps[warmup:] or steps
        return sum(steady) / len(steady)

    def batches(self) -> list[dict[str, Any]]:
        """Each micro-batch's id/label shapes as the step clock recorded them (see its recorded_step)."""
        return self.trainer.get("batches", [])

    def train_cpu(self) -> float:
        return sum(self.step_cpus())

    def fixed_cpu(self, warmup: int | None = None) -> float:
        """Everything but steady-state steps: start-up, data, model, first-step warm-up, save, exit
        (the CPU of a 1-step run minus one step)."""
        return self.cpu - len(self.step_cpus()) * self.step_cpu(warmup)

    def evals(self) -> list[dict[str, Any]]:
        return self.trainer["evals"]

    def json(self, name: str) -> Any:
        return json.loads((self.out / name).read_text())


def env(one_thread: bool = True, **extra: str) -> dict[str, str]:
    """The environment of a side: one compute thread (unless `one_thread=False`: a user's defaults)."""
    e = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "WANDB_API_KEY", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
              "TOKENIZERS_PARALLELISM"):
        e.pop(k, None)
    if one_thread:
        e.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    e.update(HF_HUB_OFFLINE="1",
             HF_DATASETS_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1", WANDB_MODE="disabled",
             RLHF_ASSETS_DIR=str(ASSETS), PYTHONPATH=os.pathsep.join([str(BENCH / "clock"), e.get("PYTHONPATH", "")]),
             HF_DATASETS_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")
    e.update(extra)
    return e


def run(cmd: list[str], out: Path, timeout: float = 1800, clock: bool = True, one_thread: bool = True) -> Run:
    """Run `cmd` (a side) to completion; its log goes to out/log.txt. Raises BenchError on failure."""
    out.mkdir(parents=True, exist_ok=True)
    clock_file = out / "clock.json"
    extra = {"RLHF_BENCH_CLOCK": str(clock_file)} if clock else {}
    with open(out / "log.txt", "w") as log:
        log.write(" ".join(map(str, cmd)) + "\n\n")
        log.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, env=env(one_thread, **extra),
                                cwd=ROOT)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                raise BenchError(f"timed out after {timeout:.0f} s: {' '.join(map(str, cmd))}")
            time.sleep(0.02)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = (out / "log.txt").read_text()[-3000:]
        raise BenchError(f"exit {code}: {' '.join(map(str, cmd))}\n{tail}")
    data = json.loads(clock_file.read_text()) if clock and clock_file.is_file() else {}
    return Run(usage.ru_utime + usage.ru_stime, wall, data, out)


def ours(*overrides: str) -> list[str]:
    """The real CLI, as a user types it."""
    return [str(RLHF), *overrides, "logger=none"]


def peer(script: str, **args: Any) -> list[str]:
    cmd = [sys.executable, str(BENCH / "peers" / f"{script}.py")]
    for k, v in args.items():
        if v is None or v is False:
            continue
        cmd += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return cmd


def pairs(n: int, a, b) -> list[tuple[Any, Any]]:
    """n A/B repetitions, alternating which side goes first (A B, B A, A B, ...): drift on a shared
    machine then hits both sides alike. a(i) and b(i) run repetition i and return what they measure."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            ra = a(i)
            rb = b(i)
        else:
            rb = b(i)
            ra = a(i)
        out.append((ra, rb))
    return out


@dataclass
class Row:
    """One line of the results table: a measurement, both sides, and the per-pair ratio ours / peer.
    A measurement without a peer (`values`: ours alone, e.g. seconds of `rlhf --help`) has no ratio;
    its goal then applies to the median value."""

    bench: str
    measure: str
    unit: str = ""
    ours: float | None = None
    peer: float | None = None
    ratios: list[float] = field(default_factory=list)
    goal: str = ""            # e.g. "<= 1.03", ">= 1.5"; "" = reported only
    note: str = ""
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def spread(self) -> tuple[float, float] | None:
        xs = self.ratios or self.values
        return (min(xs), max(xs)) if xs else None

    @property
    def met(self) -> bool | None:
        x = self.median if self.ratios else (self.ours if self.values else None)
        if not self.goal or x is None:
            return None
        op, value = self.goal.split()
        return x <= float(value) if op == "<=" else x >= float(value)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(median=self.median, spread=self.spread, met=self.met)
        return d


def value_row(bench: str, measure: str, unit: str, values: list[float], goal: str = "", note: str = "") -> Row:
    return Row(bench, measure, unit, statistics.median(values), None, [], goal, note, list(values))


def ratio_rows(bench: str, measure: str, unit: str, results: list[tuple[float, float]], goal: str = "",
               note: str = "") -> Row:
    """A row from per-pair (ours, peer) values: medians of each side, ratio ours / peer per pair."""
    return Row(bench, measure, unit, statistics.median(a for a, _ in results), statistics.median(b for _, b in results),
               [a / b for a, b in results], goal, note)


def same_batches(results: list[tuple[Run, Run]]) -> str:
    """A note for a per-step row: whether both sides of every pair trained on batches of the same
    shapes and real-token counts (what makes their per-step CPU comparable)."""
    differ = sum(o.batches() != p.batches() for o, p in results)
    n = sum(len(o.batches()) for o, _ in results)
    return f"same batches on both sides ({n} micro-batches)" if not differ else f"batches DIFFER in {differ} pair(s)"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


@dataclass
class Context:
    """What a benchmark function gets: quick or full, repetitions, where its sides write."""

    quick: bool
    out: Path
    n_pairs: int | None = None   # --pairs: override every benchmark's own count

    def reps(self, quick: int, full: int) -> int:
        return self.n_pairs or (quick if self.quick else full)

    def pick(self, quick, full):
        return quick if self.quick else full


def side_by_side(ctx: Context, name: str, ours_cmd, peer_cmd, n: int, timeout: float = 1800) -> list[tuple[Run, Run]]:
    """n alternating A/B repetitions of ours_cmd(out) and peer_cmd(out) (each returns an argv)."""
    def a(i):
        out = ctx.out / name / f"ours-{i}"
        return run(ours_cmd(out), out, timeout)

    def b(i):
        out = ctx.out / name / f"peer-{i}"
        return run(peer_cmd(out), out, timeout)

    return pairs(n, a, b)
