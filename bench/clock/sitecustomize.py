"""Step clock for bench/run.py, loaded by every benchmarked process, ours and the plain-TRL peer alike.

bench/run.py puts this folder on PYTHONPATH, so Python imports this file at start-up. It does
nothing unless RLHF_BENCH_CLOCK names a JSON file to write. Then, when `transformers.trainer` is
first imported, every `Trainer` gets a callback recording the process CPU time (`time.process_time`:
all threads of this process) and the wall time at the end of each optimizer step, and
`Trainer.evaluate` is timed so evaluation can be taken out of the step it interrupts. At exit the
file receives, per trainer: the class, the (step, cpu, wall) of train begin and each step end, and
each evaluation's (step, training CPU so far, cpu, wall, metrics). Neither side knows it is timed;
both pay the same few microseconds per step. Our PPO (not a Trainer) gets its phases timed instead:
rollout (generation), scoring, the rest of making experience (log-probs, reference, values, GAE)
and optimisation, summed over iterations under "phases".
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.util
import json
import os
import sys
import time

OUT = os.environ.get("RLHF_BENCH_CLOCK")
TRAINERS: list[dict] = []
PHASES: dict[str, list[float]] = {}  # name -> [cpu, wall, calls]


def _now() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def _patch(trainer_module) -> None:
    from transformers import TrainerCallback

    Trainer = trainer_module.Trainer

    class Clock(TrainerCallback):
        def __init__(self, record: dict):
            self.record = record

        def on_train_begin(self, args, state, control, **kwargs):
            self.record["begin"] = [state.global_step, *_now()]

        def on_step_end(self, args, state, control, **kwargs):
            self.record["steps"].append([state.global_step, *_now()])

    init, evaluate, training_step = Trainer.__init__, Trainer.evaluate, Trainer.training_step

    def timed_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._bench_clock = {"class": type(self).__name__, "begin": None, "steps": [], "evals": [],
                             "batches": []}
        TRAINERS.append(self._bench_clock)
        self.add_callback(Clock(self._bench_clock))

    def timed_evaluate(self, *args, **kwargs):
        c0, w0 = _now()
        out = evaluate(self, *args, **kwargs)
        c1, w1 = _now()
        rec = getattr(self, "_bench_clock", None)
        if rec is not None:
            metrics = {k: v for k, v in (out or {}).items() if isinstance(v, int | float)}
            rec["evals"].append({"step": self.state.global_step, "cpu": c1 - c0, "wall": w1 - w0,
                                 "at": [c0, w0], "metrics": metrics})
        return out

    def recorded_step(self, model, inputs, *args, **kwargs):
        # Each micro-batch's shape per id/label field (and the count of labelled tokens), so a benchmark can check that
        # both sides trained on the same batches (otherwise a per-step ratio compares different work).
        rec = getattr(self, "_bench_clock", None)
        if rec is not None and isinstance(inputs, dict):
            rec["batches"].append({k: [*v.shape, int((v != -100).sum()) if "labels" in k else None]
                                   for k, v in inputs.items() if hasattr(v, "shape") and ("ids" in k or "labels" in k)})
        return training_step(self, model, inputs, *args, **kwargs)

    Trainer.__init__, Trainer.evaluate, Trainer.training_step = timed_init, timed_evaluate, recorded_step


def _timed(name: str, fn):
    def wrapper(*args, **kwargs):
        c0, w0 = _now()
        try:
            return fn(*args, **kwargs)
        finally:
            c1, w1 = _now()
            acc = PHASES.setdefault(name, [0.0, 0.0, 0])
            acc[0] += c1 - c0
            acc[1] += w1 - w0
            acc[2] += 1
    return wrapper


def _patch_ppo(module) -> None:
    PPOTrainer = module.PPOTrainer
    module.generate = _timed("rollout", module.generate)  # rlhf.sampling.generate, as the trainer calls it
    PPOTrainer.make_experience = _timed("make_experience", PPOTrainer.make_experience)
    PPOTrainer.optimise = _timed("optimise", PPOTrainer.optimise)
    init = PPOTrainer.__init__

    def timed_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.scorer = _timed("scoring", self.scorer)

    PPOTrainer.__init__ = timed_init


PATCHES = {"transformers.trainer": _patch, "rlhf.ppo.trainer": _patch_ppo}


class _OnImport(importlib.abc.MetaPathFinder):
    """Runs the patch of a module in PATCHES right after the module is executed, whoever imports it."""

    def find_spec(self, name, path=None, target=None):
        if name not in PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            PATCHES[name](module)

        spec.loader.exec_module = exec_module
        return spec


def _write() -> None:
    with open(OUT, "w") as f:
        json.dump({"trainers": TRAINERS, "phases": PHASES, "exit": list(_now()), "pid": os.getpid()}, f)


if OUT:
    sys.meta_path.insert(0, _OnImport())
    atexit.register(_write)
