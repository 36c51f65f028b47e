"""The policy-vs-reference evaluation during training, every `evaluation.every_steps` optimizer steps
(DPO, GRPO, RLOO: a TrainerCallback; PPO: a hook of its loop), so KL, gold and RM score and win
rate are curves: the same `rlhf.evaluation.evaluate_policy` as the final evaluation, on the first
`evaluation.curve_prompts` of its held-out prompts with the same seeds (each point compares like with
like), logged as `policy_eval/<name>` with a samples table `policy_eval/samples` each time
(`rlhf.tracking.Tracker`: W&B, TensorBoard, history.jsonl). Training is unchanged by it: the
random state is restored after each point and the models return to their own mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .. import distributed
from ..errors import UserError
from .common import StageContext
from .evaluator import PolicyEvaluator

log = logging.getLogger(__name__)
PREFIX = "policy_eval"


class Curves:
    """`maybe(step, policy)` evaluates at every `every` steps; `points`: what each point measured."""

    def __init__(self, ctx: StageContext, evaluator: PolicyEvaluator, every: int, n_prompts: int,
                 reference: Callable[[], object]):
        self.ctx, self.evaluator, self.every = ctx, evaluator, every
        self.n_prompts = min(n_prompts, len(evaluator.prompts))
        self._reference, self._ref_cached = reference, False
        self.reference_model = None
        self.points: list[dict] = []

    @classmethod
    def from_config(cls, ctx: StageContext, evaluator: PolicyEvaluator | None,
                    reference: Callable[[], object]) -> Curves | None:
        """None without `evaluation.every_steps` (or without an evaluation). `reference()`: the
        reference model, called once at the first point (None: the PEFT policy with its adapter
        disabled). Refused under DeepSpeed or several processes, before anything is trained."""
        cfg = ctx.cfg
        every = cfg.evaluation.get("every_steps")
        if not every or evaluator is None:
            return None
        if distributed.launched() or distributed.uses_deepspeed(cfg):
            raise UserError("evaluation.every_steps: the evaluation during training runs in one process without "
                            "DeepSpeed; set evaluation.every_steps=null (the final evaluation still runs)")
        return cls(ctx, evaluator, int(every), int(cfg.evaluation.curve_prompts), reference)

    def maybe(self, step: int, policy) -> dict | None:
        if step % self.every:
            return None
        import torch

        from ..evaluation import evaluate_policy
        from ..models import stop_token_ids
        from ..sampling import evaluating

        if not self._ref_cached:
            self.reference_model, self._ref_cached = self._reference(), True
        ev, n, ref = self.evaluator, self.n_prompts, self.reference_model
        with torch.random.fork_rng(), evaluating(*[m for m in (policy, ref) if m is not None]):
            result = evaluate_policy(policy, ev.tokenizer, ev.prompts[:n], ev.prompt_ids[:n], ev.gen,
                                     stop_ids=stop_token_ids(ev.tokenizer), reference=ref, judge=ev.judge,
                                     reward=ev.reward, n_show=ev.n_show, engine=ev.engine(policy))
        self.ctx.tracker.log_eval(result, PREFIX, step)
        point = {"step": step, **{k: v for k, v in result.items() if isinstance(v, int | float)}}
        self.points.append(point)
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

        return PolicyEvalCallback()


def attach(ctx: StageContext, trainer, curves: Curves | None) -> None:
    """History for every TRL trainer; the curves' callback where they are asked for."""
    from .common import track

    track(ctx, trainer)
    if curves is not None:
        trainer.add_callback(curves.callback(trainer.model))
