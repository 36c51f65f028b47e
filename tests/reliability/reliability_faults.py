"""Faults a run must survive: kill -9 after a checkpoint (and during one), then a relaunch that
resumes; two runs started in the same second. Shared by the tests and bench/reliability.py.

A kill-and-resume trial runs a stage three times with one config: uninterrupted (in this process),
then as a process killed with SIGKILL the moment its first checkpoint is complete, then relaunched
into the killed run's directory. The resumed run must log the same loss at every step and end
with the same weights (max difference 0.0) as the uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from reliability_harness import CASES, QUIET, kill_when, launch, max_difference, run_inprocess

STEPS = ["trainer.max_steps=6", "trainer.save_steps=2", "trainer.logging_steps=1"]
TRL = [*STEPS, "trainer.eval_strategy=no"]
PAIRS = ["data=jsonl", "data.kind=pair", "data.source={cases}/pairs_good.jsonl"]  # 13 short pairs
# Every trainable stage, on a budget of seconds, checkpointing every 2 steps (PPO: iterations).
RESUMABLE = {
    "sft": [*TRL, "stage.eval_before=false"],
    "reward": ["stage=reward", "model.init_from={sft}", "model.max_length=128", *PAIRS, *TRL],
    "dpo": ["stage=dpo", "model.init_from={sft}", "evaluation.enabled=false", *PAIRS, *TRL],
    "ppo": ["stage=ppo", "model.init_from={sft}", "stage.reward_model={rm}", "evaluation.enabled=false",
            "trainer.total_iterations=4", "trainer.save_every=2"],
    "grpo": ["stage=grpo", "model.init_from={sft}", "stage.reward_funcs=[vader]", "evaluation.enabled=false", *STEPS],
    "rloo": ["stage=rloo", "model.init_from={sft}", "stage.reward_funcs=[vader]", "evaluation.enabled=false", *STEPS],
}


@dataclass
class Trial:
    stage: str
    survived: bool  # resumed and finished, with the same per-step losses
    max_difference: float  # of the final weights (model/, and value/ for PPO)
    detail: str


def with_overrides(args: list[str], *extra: str) -> list[str]:
    """`args` with `extra` in place of the overrides of the same keys (`rlhf` refuses a key given twice)."""
    keys = {e.split("=", 1)[0].lstrip("+~") for e in extra}
    return [a for a in args if a.split("=", 1)[0].lstrip("+~") not in keys] + list(extra)


def stage_args(stage: str, fixtures: dict[str, Path]) -> list[str]:
    return [*QUIET, *(a.format(cases=CASES, **fixtures) for a in RESUMABLE[stage])]


def losses(run_dir: Path) -> list[tuple]:
    """(step, loss, grad_norm) of every logged training step (TRL), or PPO's per-iteration losses."""
    ppo = run_dir / "ppo_history.json"
    if ppo.is_file():
        return [(h["iteration"], h["loss/policy"], h["loss/value"]) for h in json.loads(ppo.read_text())]
    log = json.loads((run_dir / "log_history.json").read_text())
    return [(h["step"], h["loss"], h.get("grad_norm")) for h in log if "loss" in h]


def complete_checkpoint(run_dir: Path) -> bool:
    root = run_dir / "checkpoints"
    return any((p / "trainer_state.json").is_file() for p in root.glob("checkpoint-*")) or any(root.glob("iter-*"))


def partial_checkpoint(run_dir: Path) -> None:
    """What a kill in the middle of writing the next checkpoint leaves: its weights, no trainer_state.json."""
    root = run_dir / "checkpoints"
    done = max(root.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    partial = root / f"checkpoint-{int(done.name.split('-')[1]) + 2}"
    shutil.copytree(done, partial, dirs_exist_ok=True)
    (partial / "trainer_state.json").unlink()


def kill_and_resume(stage: str, root: Path, fixtures: dict[str, Path], partial: bool = False) -> Trial:
    """The trial described in the module docstring; `partial`: also leave a half-written newer
    checkpoint behind the kill (the resume must skip it)."""
    from rlhf.run.runs import read_status

    args, runs = stage_args(stage, fixtures), root / "runs"
    ref, run = root / f"{stage}-uninterrupted", root / f"{stage}-killed"
    # The run to kill starts first; the uninterrupted one trains here meanwhile (the two only share CPUs).
    proc = launch([*args, f"run_dir={run}"], runs, root / f"{stage}-killed.log")
    killed = _in_thread(kill_when, proc, lambda: complete_checkpoint(run))
    out = run_inprocess([*args, f"run_dir={ref}"], runs)
    if not killed():
        return Trial(stage, False, float("inf"), "the run ended before its first checkpoint: nothing was killed")
    if out.code != 0:
        return Trial(stage, False, float("inf"), f"uninterrupted run failed: {out.stderr[-2000:]}")
    status = (read_status(run) or {}).get("status")
    if status != "interrupted":
        return Trial(stage, False, float("inf"), f"after kill -9 status.json reads {status!r}, not 'interrupted'")
    if partial and stage != "ppo":
        partial_checkpoint(run)
    again = launch([*args, f"run_dir={run}"], runs, root / f"{stage}-resumed.log")
    if again.wait(timeout=900) != 0:
        return Trial(stage, False, float("inf"), (root / f"{stage}-resumed.log").read_text()[-3000:])
    diff = max(max_difference(ref / d, run / d) for d in ("model", "value") if (ref / d).is_dir())
    same = losses(ref) == losses(run)
    detail = "" if same else f"losses differ:\n{losses(ref)}\n{losses(run)}"
    totals = [k for k in ("train_loss", "train_tokens", "iterations") if totals_of(ref).get(k) != totals_of(run).get(k)]
    if totals:
        same, detail = False, f"{detail}\nwhole-run totals differ: {totals}: {totals_of(ref)} vs {totals_of(run)}"
    return Trial(stage, same, diff, detail)


def _in_thread(fn, *args):
    """Start fn(*args) in a thread; returns a function that waits for its result (or raises its error)."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def result():
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["result"]

    return result


def totals_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def same_second(root: Path, configs: list[list[str]]) -> list[Path]:
    """Launch one process per config at once, all named by the same clock reading
    (`run_dir=.../${now:%Y}`: the same name for the whole year, so they collide for sure); returns
    the run dir each finished in (the processes must all exit 0)."""
    runs = root / "runs"
    procs = [launch([*QUIET, *c, "run_dir=${paths.runs_dir}/same/${now:%Y}"], runs, root / f"same-{i}.log")
             for i, c in enumerate(configs)]
    dirs = []
    for i, p in enumerate(procs):
        text = (root / f"same-{i}.log")
        assert p.wait(timeout=900) == 0, text.read_text()[-3000:]
        line = next(ln for ln in text.read_text().splitlines() if "artifact: " in ln)
        dirs.append(Path(line.split("artifact: ", 1)[1].strip()))
    return dirs


def kill_mid_checkpoint(root: Path, fixtures: dict[str, Path]) -> Trial:
    """SFT killed the moment a checkpoint folder appears, before its trainer_state.json (the window is
    milliseconds wide; when the poll misses it the kill lands just after, which is a plain kill),
    then resumed: it must pick the newest *complete* checkpoint and match the uninterrupted run."""
    from rlhf.run.runs import read_status

    args = [a.replace("trainer.save_steps=2", "trainer.save_steps=1") for a in stage_args("sft", fixtures)]
    runs = root / "runs"
    ref, run = root / "mid-uninterrupted", root / "mid-killed"
    out = run_inprocess([*args, f"run_dir={ref}"], runs)
    if out.code != 0:
        return Trial("sft (mid-checkpoint)", False, float("inf"), out.stderr[-2000:])

    def writing() -> bool:
        ckpts = list((run / "checkpoints").glob("checkpoint-*"))
        return len(ckpts) >= 2 and any(not (p / "trainer_state.json").exists() for p in ckpts)

    proc = launch([*args, f"run_dir={run}"], runs, root / "mid-killed.log")
    if not kill_when(proc, writing, poll=0.001):
        return Trial("sft (mid-checkpoint)", False, float("inf"), "the run ended before it was killed")
    partial = [p.name for p in (run / "checkpoints").glob("checkpoint-*") if not (p / "trainer_state.json").exists()]
    assert (read_status(run) or {}).get("status") == "interrupted"
    again = launch([*args, f"run_dir={run}"], runs, root / "mid-resumed.log")
    if again.wait(timeout=900) != 0:
        return Trial("sft (mid-checkpoint)", False, float("inf"), (root / "mid-resumed.log").read_text()[-3000:])
    same = losses(ref) == losses(run)
    return Trial("sft (mid-checkpoint)", same, max_difference(ref / "model", run / "model"),
                 f"killed with {partial or 'no'} partial checkpoint(s)")
