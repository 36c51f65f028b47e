"""Non-finite training is stopped at the step it happens, and never published.

- `StepGuard`: the decision for one optimizer step. Finite loss and gradient norm: go on. Otherwise,
  under `nonfinite.policy=stop` (the default) a RunFailed naming the step, the value and the likely
  cause; under `skip` the step is skipped (no weight and no optimizer state changes), counted, and
  the run stops after `nonfinite.max_consecutive` skipped steps in a row.
- `NonFiniteGuard`: a StepGuard as a transformers callback for the TRL stages (sft, reward, dpo,
  grpo, rloo). It sees every micro-batch loss (it wraps the trainer's `training_step`) and the
  gradients just before each optimizer step. It also keeps the run's loss total, saved inside each
  checkpoint's trainer_state.json, so a resumed run's train_loss covers the whole run.
- `check_published`: every tensor of a model about to be published is finite (rlhf.stages.common.finish
  calls it before the manifest is written).

Under DeepSpeed the engine steps inside `backward`, before any callback runs: `skip` is refused at
validation there, and `stop` stops the run after that step (its weights are never published).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .. import distributed
from ..errors import RunFailed

log = logging.getLogger(__name__)

POLICIES = ("stop", "skip")


def config_problems(cfg) -> list[str]:
    """What is wrong with the `nonfinite:` node (checked with the rest of the config)."""
    node = cfg.get("nonfinite")
    if node is None:
        return []
    out = []
    if node.get("policy") not in POLICIES:
        out.append(f"nonfinite.policy: {node.get('policy')!r} is not one of {', '.join(POLICIES)}")
    n = node.get("max_consecutive")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        out.append(f"nonfinite.max_consecutive: must be a whole number >= 1, got {n!r}")
    if node.get("policy") == "skip" and cfg.get("deepspeed") is not None:
        out.append("nonfinite.policy=skip: not available under DeepSpeed (its engine steps inside backward, before a "
                   "step can be skipped); use nonfinite.policy=stop")
    return out


def likely_cause(bad: dict[str, float], learning_rate: float | None) -> str:
    if any("score" in k or "reward" in k for k in bad):
        return "the reward itself is not finite: check the reward model or judge (stage.reward_model / stage.judge)"
    lr = f" (trainer.learning_rate={learning_rate:g})" if learning_rate is not None else ""
    return (f"the learning rate{lr} is too high for this model: lower it (or warm up longer), "
            "or look for extreme values in the data of that step")


class StepGuard:
    """Decides what a non-finite optimizer step does. `policy`: stop | skip; `max_consecutive`: skipped
    steps in a row after which a `skip` run stops too (a diverged run does not come back)."""

    def __init__(self, policy: str = "stop", max_consecutive: int = 3,
                 learning_rate: Callable[[], float | None] = lambda: None):
        self.policy, self.max_consecutive, self.learning_rate = policy, int(max_consecutive), learning_rate
        self.skipped = 0  # steps skipped in the whole run
        self.consecutive = 0  # ... in a row, up to now

    def check(self, step: str, values: dict[str, float | None]) -> bool:
        """True: take the optimizer step. False: skip it. Raises RunFailed to stop the run. `step`
        names the step for the message ("step 3 of 8"); `values`: loss, grad_norm, ... (None = unknown)."""
        bad = {k: v for k, v in values.items() if v is not None and not math.isfinite(v)}
        if not bad:
            self.consecutive = 0
            return True
        what = ", ".join(f"{k} is {v}" for k, v in bad.items())
        cause = likely_cause(bad, self.learning_rate())
        if self.policy == "stop":
            raise RunFailed(f"training diverged at {step}: {what}. Likely cause: {cause}. The run stopped there and is "
                            "marked failed; nothing was published (nonfinite.policy=skip would skip such steps)")
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive >= self.max_consecutive:
            raise RunFailed(f"training diverged: {self.consecutive} optimizer steps in a row were not finite (the last at "
                            f"{step}: {what}; nonfinite.max_consecutive={self.max_consecutive}). Likely cause: {cause}. "
                            "The run is marked failed; nothing was published")
        log.warning("skipping %s: %s (%d skipped so far, %d in a row; nonfinite.policy=skip)", step, what,
                    self.skipped, self.consecutive)
        return False


class NonFiniteGuard(TrainerCallback, ExportableState):
    """The StepGuard of a transformers/TRL trainer; `attach(trainer)` before `train()`."""

    def __init__(self, policy: str = "stop", max_consecutive: int = 3):
        self.guard = StepGuard(policy, max_consecutive, self._learning_rate)
        self.trainer = None
        self.loss_sum = 0.0  # the finite micro-batch losses of every step taken, as the trainer sums them
        self.num_tokens: int | None = None  # TRL's token count (`num_tokens`), carried across a resume
        self._bad_loss: float | None = None  # a non-finite micro-batch loss in the current step

    def attach(self, trainer) -> NonFiniteGuard:
        self.trainer = trainer
        trainer.add_callback(self)
        inner = trainer.training_step

        def training_step(*args, **kwargs):
            loss = inner(*args, **kwargs)
            value = float(loss.detach().float().mean())
            if math.isfinite(value):
                self.loss_sum += value
            else:
                self._bad_loss = value
            return loss

        trainer.training_step = training_step  # the instance attribute shadows the method
        return self

    def on_train_begin(self, args, state, control, **kwargs):
        # A checkpoint written before this guard existed has no entry for it; transformers needs one.
        state.stateful_callbacks.setdefault(type(self).__name__, {})

    def _learning_rate(self) -> float | None:
        return getattr(getattr(self.trainer, "args", None), "learning_rate", None)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        import torch

        params = [p for g in self.trainer.optimizer.param_groups for p in g["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        norm = float(torch.nn.utils.get_total_norm(grads)) if grads else None
        bad_loss, self._bad_loss = self._bad_loss, None
        bad = distributed.any_rank(bad_loss is not None or (norm is not None and not math.isfinite(norm)))
        if not bad:
            self.guard.check(f"step {state.global_step + 1}", {})
            return
        step = f"step {state.global_step + 1} of {state.max_steps}"
        values = {"loss": bad_loss, "grad_norm": norm if norm is not None else math.nan}
        if not self.guard.check(step, values):
            for p in params:  # no gradient: the optimizer leaves the weight and its moments as they are
                p.grad = None

    def train_loss(self, global_step: int) -> float:
        """Mean loss per optimizer step over the whole run (resumed or not), skipped steps left out."""
        trained = global_step - self.guard.skipped
        total = distributed.mean_over_ranks(self.loss_sum)
        return total / trained if trained > 0 else float("nan")  # no step trained: no mean loss

    # ---- carried inside each checkpoint (trainer_state.json, "stateful_callbacks") -------------
    def state(self) -> dict:
        tokens = getattr(self.trainer, "_total_train_tokens", None)  # TRL's SFT count, reset by a resume
        return {"args": {"policy": self.guard.policy, "max_consecutive": self.guard.max_consecutive},
                "attributes": {"loss_sum": self.loss_sum, "skipped": self.guard.skipped,
                               "consecutive": self.guard.consecutive, "num_tokens": tokens}}

    def restore(self, checkpoint: Path) -> None:
        """Take the totals saved in `checkpoint` (a resumed run continues them)."""
        import json

        saved = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
        attrs = (saved.get("stateful_callbacks", {}).get(type(self).__name__) or {}).get("attributes", {})
        self.loss_sum = float(attrs.get("loss_sum", 0.0))
        self.guard.skipped = int(attrs.get("skipped", 0))
        self.guard.consecutive = int(attrs.get("consecutive", 0))
        self.num_tokens = attrs.get("num_tokens")
        if self.num_tokens is not None and hasattr(self.trainer, "_total_train_tokens"):
            self.trainer._total_train_tokens = int(self.num_tokens)


def check_published(run_dir: Path, dirs: list[str | None]) -> None:
    """RunFailed unless every floating-point tensor in the model folders about to be published is finite."""
    from .integrity import nonfinite_tensors

    for rel in dirs:
        if not rel or not (Path(run_dir) / rel).is_dir():
            continue
        bad = nonfinite_tensors(Path(run_dir) / rel)
        if bad:
            raise RunFailed(f"{Path(run_dir) / rel}: {len(bad)} tensors hold NaN or inf (e.g. {', '.join(bad[:3])}): the "
                            "training diverged. Not published: no artifact.json was written and the run is marked "
                            "failed; lower the learning rate and train again")
