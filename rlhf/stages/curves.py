"""The policy-vs-reference evaluation during training, every `evaluation.every_steps` optimizer steps
(DPO, GRPO, RLOO: a TrainerCallback; PPO: a hook of its loop), so KL, gold and RM score and win
rate are curves (under DeepSpeed or several processes for DPO and PPO: every rank evaluates at the
same step, its share of the prompts in lock-step, `rlhf.evaluation.evaluate_policy`): the same `rlhf.evaluation.evaluate_policy` as the final evaluation, on the first
`evaluation.curve_prompts` of its held-out prompts with the same seeds (each point compares like with
like), logged as `policy_eval/<name>` with a samples table `policy_eval/samples` each time
(`rlhf.tracking.Tracker`: W&B, TensorBoard, history.jsonl). Training is unchanged by it: the
random state is restored after each point and the models return to their own mode. Each point also
feeds the drift monitors (`rlhf.monitor`: `monitor/*`, warn or stop, the best point kept for
`monitor.publish=best`); the stage's own reward is scored there as `proxy`, the audit reward models
as `audit` (`rlhf.monitor.audit`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .. import distributed
from ..errors import UserError
from ..monitor import Monitor
from .common import StageContext
from .evaluator import PolicyEvaluator

log = logging.getLogger(__name__)
PREFIX = "policy_eval"


class Curves:
    """`maybe(step, policy)` evaluates at every `every` steps; `points`: what each point measured."""

    def __init__(self, ctx: StageContext, evaluator: PolicyEvaluator, every: int, n_prompts: int,
                 reference: Callable[[], object], monitor: Monitor | None = None):
        self.ctx, self.evaluator, self.every = ctx, evaluator, every
        self.n_prompts = min(n_prompts, len(evaluator.prompts))
        self._reference, self._ref_cached = reference, False
        self.reference_model = None
        self.points: list[dict] = []
        self.monitor = monitor
        self.seconds = 0.0  # wall time of the points (evaluation + monitors)

    @classmethod
    def from_config(cls, ctx: StageContext, evaluator: PolicyEvaluator | None,
                    reference: Callable[[], object], proxy: Callable | None = None,
                    across_ranks: bool = False) -> Curves | None:
        """None without `evaluation.every_steps` (or without an evaluation). `reference()`: the
        reference model, called once at the first point (None: the PEFT policy with its adapter
        disabled); `proxy`: the reward the stage optimises, (prompts, completions) -> scores, scored
        at every point and in the final evaluation as `proxy`. `across_ranks`: the stage evaluates
        its trainer's own models on every rank at the same step (DPO, PPO), so the curves also run
        under DeepSpeed or several processes; other stages are refused there, before anything is
        trained."""
        cfg = ctx.cfg
        every = cfg.evaluation.get("every_steps")
        if not every or evaluator is None:
            return None
        if (distributed.launched() or distributed.uses_deepspeed(cfg)) and not across_ranks:
            raise UserError(f"evaluation.every_steps: under DeepSpeed or several processes the evaluation during "
                            f"training runs for stage=dpo and stage=ppo, not stage={cfg.stage.name}; run it in one "
                            "process without deepspeed=, or set evaluation.every_steps=null (the final evaluation "
                            "still runs)")
        if proxy is not None:
            evaluator.scorers["proxy"] = proxy
        return cls(ctx, evaluator, int(every), int(cfg.evaluation.curve_prompts), reference,
                   Monitor.from_config(cfg))

    @property
    def stop(self) -> bool:
        """A `stop` monitor fired: end training after this point."""
        return self.monitor is not None and self.monitor.stop is not None

    def after_step(self, step: int, policy) -> bool:
        """`maybe`, then whether training must stop (PPO's `on_iteration`)."""
        self.maybe(step, policy)
        return self.stop

    def maybe(self, step: int, policy, force: bool = False) -> dict | None:
        if step % self.every and not force:
            return None
        import time

        import torch

        from ..evaluation import evaluate_policy
        from ..models import stop_token_ids
        from ..sampling import evaluating

        t0 = time.perf_counter()
        if not self._ref_cached:
            self.reference_model, self._ref_cached = distributed.unwrapped(self._reference()), True
        ev, n, ref = self.evaluator, self.n_prompts, self.reference_model
        # several ranks: each samples its share in lock-step and every rank gets the same figures, so
        # the monitors decide alike everywhere; rank 0's tracker logs them
        with torch.random.fork_rng(), evaluating(*[m for m in (policy, ref) if m is not None]):
            result = evaluate_policy(policy, ev.tokenizer, ev.prompts[:n], ev.prompt_ids[:n], ev.gen,
                                     stop_ids=stop_token_ids(ev.tokenizer), reference=ref, judge=ev.judge,
                                     reward=ev.reward, n_show=ev.n_show, engine=ev.engine(policy),
                                     scorers=ev.scorers, shard=distributed.world())
        self.ctx.tracker.log_eval(result, PREFIX, step)
        point = {"step": step, **{k: v for k, v in result.items() if isinstance(v, int | float)}}
        self.points.append(point)
        if self.monitor is not None:
            self.monitor.tracker = self.ctx.tracker
            self.monitor.observe(step, result, policy)
        self.seconds += time.perf_counter() - t0
        log.info("step %d: %s", step, ", ".join(f"{k} {v:.3f}" for k, v in point.items()
                                                 if k in ("kl", "gold_policy", "rm_policy", "gold_win_rate")))
        return point

    def callback(self, model):
        """A TrainerCallback evaluating `model` (the trainer's) at the end of every `every`-th step."""
        from transformers import TrainerCallback

        curves = self

        class PolicyEvalCallback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                curves.maybe(state.global_step, model)
                if curves.stop:
                    control.should_training_stop = True

        return PolicyEvalCallback()

    def conclude(self, step: int, policy, metrics: dict, extra: dict) -> None:
        """After training (`step`: the last optimizer step): the points and the monitor's summary into
        `metrics`; under `monitor.publish=best` the last step is evaluated (if it was not a point),
        the best point's weights are put back into `policy`, and `extra["published"]` says which step,
        why, and the last step's figures beside it."""
        metrics["policy_eval_curve"] = self.points
        # the points measure KL against the model the stage trains against (a LoRA policy's: its starting
        # weights, the adapter off), whatever `evaluation.reference` the final evaluation is measured against
        metrics["policy_eval_curve_reference"] = str(extra.get("reference_dir"))
        metrics["policy_eval_curve_seconds"] = self.seconds
        mon = self.monitor
        if mon is None:
            return
        if mon.opt.publish == "best" and (not self.points or self.points[-1]["step"] != step):
            self.maybe(step, policy, force=True)
        metrics["monitor"] = mon.summary()
        metrics["monitor_fired"] = ",".join(metrics["monitor"]["fired"])  # the W&B summary: strings and numbers
        metrics["monitor_firings"] = len(mon.firings)
        if mon.stop:
            metrics["monitor_stopped_at_step"] = mon.stop["step"]
        if mon.firings:
            log.warning("monitors fired: %s", "; ".join(f"{f['monitor']} at step {f['step']} ({f['value']:.4g} > "
                                                         f"{f['threshold']:.4g}, {f['action']})" for f in mon.firings))
        published = mon.restore_best(policy, step, self.points[-1] if self.points else None)
        if published is not None:
            extra["published"] = published
            metrics["published_step"] = published["step"]


def attach(ctx: StageContext, trainer, curves: Curves | None) -> None:
    """History for every TRL trainer; the curves' callback where they are asked for."""
    from .common import track

    track(ctx, trainer)
    if curves is not None:
        trainer.add_callback(curves.callback(trainer.model))
