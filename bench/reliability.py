"""Reliability figures: bad inputs, kills, non-finite training, same-second launches.

    python bench/reliability.py [--stages sft,reward,dpo,ppo,grpo,rloo] [--skip-kills]

Runs, on the real CLI (the corpus in this process, kills as real processes killed with SIGKILL):
- every bad input of tests/reliability/reliability_corpus.py: how many got one clear error (exit 2, the field or
  file:line named, nothing written, earlier runs byte-identical), a traceback, a silent exit 0, or an
  unclear refusal;
- kill -9 after the first checkpoint and a relaunch, per trainable stage, plus one SFT kill while a
  checkpoint is being written: runs that resumed with the same per-step losses, and the largest
  weight difference from the uninterrupted run;
- SIGTERM (SFT, PPO) / SIGUSR1 (DPO) after the first checkpoint: one line, exit 128 + the signal,
  status interrupted, and a relaunch that resumes with the same per-step losses;
- each trainable stage at a learning rate that diverges: runs that published an artifact (must be 0);
- three runs started with one clock-named run_dir: the directories they finished in.
Takes ~10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    """tests/reliability/<name>.py, the same corpus and fault helpers the test suite runs."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "reliability" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load("reliability_harness")
corpus, faults = _load("reliability_corpus"), _load("reliability_faults")
preemption = _load("reliability_preemption")

DIVERGE = {  # a learning rate at which each stage's loss goes non-finite within a few steps
    "sft": ["trainer.learning_rate=1e6", "trainer.max_steps=8"],
    "reward": ["stage=reward", "model.init_from={sft}", "model.max_length=128", *faults.PAIRS,
               "trainer.learning_rate=1e6", "trainer.max_steps=8"],
    "dpo": ["stage=dpo", "model.init_from={sft}", "evaluation.enabled=false", *faults.PAIRS,
            "trainer.learning_rate=1e3", "trainer.max_steps=8"],
    "ppo": ["stage=ppo", "model.init_from={sft}", "stage.reward_model={rm}", "evaluation.enabled=false",
            "trainer.learning_rate=1e6", "trainer.total_iterations=4"],
    "grpo": ["stage=grpo", "model.init_from={sft}", "stage.reward_funcs=[vader]", "evaluation.enabled=false",
             "trainer.learning_rate=1e6", "trainer.max_steps=8"],
    "rloo": ["stage=rloo", "model.init_from={sft}", "stage.reward_funcs=[vader]", "evaluation.enabled=false",
             "trainer.learning_rate=1e6", "trainer.max_steps=8"],
}


def bad_inputs(root: Path, fx: dict) -> None:
    t0, tally, lead, notes = time.time(), Counter(), Counter(), []
    for case in corpus.CORPUS:
        v = corpus.try_case(case, root, fx)
        (lead if case.owner else tally)[v.kind] += 1
        if v.kind != "clear":
            notes.append(f"  {case.id}{' (lead)' if case.owner else ''}: {v.kind}: {v.detail.splitlines()[-1][:150] if v.detail else ''}")
    n = sum(tally.values()) + sum(lead.values())
    print(f"\n== bad inputs ({len(corpus.DATA)} data, {len(corpus.CONFIG)} config, {len(corpus.ARTIFACTS)} artifacts, "
          f"{len(corpus.TRUST3)} command line / run record; "
          f"{time.time() - t0:.0f} s) ==")
    print(f"inputs tried {n} | clear errors {tally['clear'] + lead['clear']} | tracebacks "
          f"{tally['traceback'] + lead['traceback']} | silent wrong {tally['silent wrong'] + lead['silent wrong']} | "
          f"unclear {tally['unclear'] + lead['unclear']}")
    print(f"  of which value validation (lead's part, {sum(lead.values())} inputs): " + ", ".join(f"{k} {v}" for k, v in lead.items()))
    print("\n".join(notes))


def kills(root: Path, fx: dict, stages: list[str]) -> None:
    print("\n== kill -9 and resume ==")
    trials = [faults.kill_and_resume(s, root, fx, partial=(s == "sft")) for s in stages]
    if "sft" in stages:
        trials.append(faults.kill_mid_checkpoint(root, fx))
    for t in trials:
        print(f"  {t.stage:<22} resumed with the same losses: {t.survived}   max weight difference {t.max_difference}"
              + (f"   ({t.detail.splitlines()[0][:120]})" if t.detail else ""))
    print(f"kills survived {sum(t.survived for t in trials)}/{len(trials)} | max difference "
          f"{max(t.max_difference for t in trials)}")


def signals(root: Path, fx: dict, stages: list[str]) -> None:
    """SIGTERM / SIGUSR1 to a real process after its first checkpoint, then a relaunch (rlhf.run.preemption)."""
    import signal

    print("\n== preemption: a signal, then a relaunch ==")
    plan = [(s, sig) for s, sig in (("sft", signal.SIGTERM), ("dpo", signal.SIGUSR1), ("ppo", signal.SIGTERM)) if s in stages]
    trials = [preemption.signal_and_resume(s, sig, root / "signals", fx) for s, sig in plan]
    for t in trials:
        print(f"  {t.stage:<5} {t.signal:<8} exit {t.exit_code}, stopped at {t.stopped_at}, resumed with the same "
              f"losses: {t.survived}" + (f"   ({t.detail.splitlines()[0][:120]})" if t.detail else ""))
    print(f"signals survived {sum(t.survived for t in trials)}/{len(trials)}")


def nonfinite(root: Path, fx: dict, stages: list[str]) -> None:
    print("\n== non-finite training ==")
    published, stopped = 0, 0
    for s in stages:
        run = root / f"diverge-{s}"
        args = [a.format(cases=harness.CASES, **fx) for a in DIVERGE[s]]
        out = harness.run_inprocess([*harness.QUIET, *args, f"run_dir={run}"], root / "runs")
        pub = (run / "artifact.json").exists()
        published += pub
        stopped += out.code == 2 and "diverged" in out.stderr
        print(f"  {s:<7} exit {out.code}, published {pub}: {out.message.splitlines()[0][:200] if out.message else ''}")
    print(f"diverging runs {len(stages)} | stopped with a clear message {stopped} | non-finite runs published {published}")


def same_second(root: Path) -> None:
    a, b = ["trainer.max_steps=2", "stage.eval_before=false"], ["trainer.max_steps=3", "stage.eval_before=false"]
    dirs = faults.same_second(root / "same", [a, a, b])
    print(f"\n== same-second launches ==\nlaunched 3 | distinct run dirs {len(set(dirs))}: {', '.join(d.name for d in dirs)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", default=",".join(faults.RESUMABLE))
    ap.add_argument("--skip-kills", action="store_true")
    a = ap.parse_args()
    stages = a.stages.split(",")
    root = Path(tempfile.mkdtemp(prefix="rlhf-reliability-"))
    t0 = time.time()
    sft = harness.build_sft(root / "fixtures" / "sft", root / "runs")
    fx = {"sft": sft, "rm": harness.build_rm(root / "fixtures" / "rm", sft, root / "runs"),
          "frm": harness.build_foreign_rm(root / "fixtures" / "frm")}
    bad_inputs(root, fx)
    nonfinite(root, fx, stages)
    if not a.skip_kills:
        kills(root, fx, stages)
        (root / "signals").mkdir()
        signals(root, fx, stages)
        (root / "same").mkdir()
        same_second(root)
    print(f"\n({time.time() - t0:.0f} s; work dir {root})")


if __name__ == "__main__":
    main()
