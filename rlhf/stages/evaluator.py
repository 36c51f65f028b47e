"""The stage-side policy-vs-reference evaluation: the `evaluation:` node made ready before training
(`PolicyEvaluator`), run at the end of a policy stage (`finish_policy`) and during training
(`curves.py`), with the reward-model scorer and the frozen reference it loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .. import distributed
from ..errors import UserError
from ..run.artifacts import Artifact
from .common import StageContext, finish, save
from .inputs import data_config, distinct_prompts, load_data, prompt_encoder


def finish_policy(ctx: StageContext, evaluator: PolicyEvaluator | None, model, tokenizer, metrics: dict[str, Any],
                  *, source: str, reference=None, extra: dict[str, Any] | None = None, engine=None,
                  across_ranks: bool = False) -> Artifact:
    """A trained policy: the policy-vs-reference evaluation (if enabled), then `finish`.

    One process without DeepSpeed evaluates the models in memory (under LoRA the reference is the
    policy with its adapter disabled). `across_ranks` (DPO, PPO): `model` and `reference` are the
    trainer's own (under ZeRO-3 partitioned, a DeepSpeed engine's), so under DeepSpeed or several
    processes every rank evaluates them in memory, its share of the prompts in lock-step
    (`rlhf.evaluation.evaluate_policy`), before the model is saved for publishing. Otherwise (the
    other stages, or `evaluation.reference` naming another policy) the model is saved first (ZeRO-3
    shards gathered into one checkpoint), then rank 0 evaluates that saved model against the
    reference loaded from `source` while the other ranks wait; the result reaches every rank.
    """
    cfg = ctx.cfg
    against = str(cfg.evaluation.get("reference") or (extra or {}).get("reference_dir") or source)
    single = not distributed.launched() and not distributed.uses_deepspeed(cfg)
    if evaluator is not None and cfg.evaluation.get("reference"):  # measure against a given policy instead
        source = policy_model_dir(cfg.evaluation.reference, "evaluation.reference")
        reference = load_reference(cfg, source, tokenizer) if single else None
        across_ranks = False
    if single or (across_ranks and (reference is not None or cfg.peft.method != "none")):
        if evaluator is not None:
            if reference is None and cfg.peft.method == "none":
                reference = load_reference(cfg, source, tokenizer)
            metrics["policy_eval"] = evaluator.run(ctx, distributed.unwrapped(model), distributed.unwrapped(reference),
                                                   against, shard=distributed.world())
        return finish(ctx, kind="policy", model=model, tokenizer=tokenizer, metrics=metrics, extra=extra,
                      engine=engine)
    saved = save(ctx, model, tokenizer, engine)
    distributed.barrier()
    if evaluator is not None:
        metrics["policy_eval"] = distributed.on_main(_evaluate_saved, ctx, evaluator, saved[0], source, against)
    return finish(ctx, kind="policy", model=None, tokenizer=tokenizer, metrics=metrics, extra=extra, saved=saved)


def _evaluate_saved(ctx: StageContext, evaluator: PolicyEvaluator, model_dir: str, source: str,
                    against: str | None = None) -> dict:
    from ..models import load_frozen_policy

    policy = load_frozen_policy(ctx.cfg.model, str(ctx.run_dir / model_dir), evaluator.tokenizer)
    return evaluator.run(ctx, policy, load_reference(ctx.cfg, source, evaluator.tokenizer), against)


@dataclass
class PolicyEvaluator:
    """The `evaluation:` node made ready: held-out prompts (encoded), judge, reward model, sampling."""

    tokenizer: Any
    prompts: list
    prompt_ids: list[list[int]]
    judge: Any
    reward: Any
    gen: Any
    n_show: int
    generation: dict | None = None  # the `generation:` node: which engine samples (rlhf.engines)
    scorers: dict[str, Any] = field(default_factory=dict)  # audit_<i> (rlhf.monitor), and a stage's "proxy"

    @classmethod
    def from_config(cls, cfg: DictConfig, tokenizer, splits=None) -> PolicyEvaluator | None:
        """None when `evaluation.enabled` is false. Loads prompts, judge and RM before any training, so
        a typo there fails in seconds, not after the stage has trained."""
        ev = cfg.evaluation
        if not ev.enabled:
            return None
        from rlhf.data import load_splits

        from ..judges import resolve
        from ..schema import Generation

        encoder = prompt_encoder(cfg, tokenizer)
        if ev.data is not None:
            held_out = load_splits(data_config(ev.data), encoder)
            rows, feats, where = held_out.eval, held_out.eval_features, f"evaluation.data ({held_out.source})"
        else:
            if splits is None:
                splits = load_data(cfg, encoder)
            encoded = encoder.encode(splits.eval)
            rows = [r for r, e in zip(splits.eval, encoded, strict=True) if e.problem is None]
            feats = [e.features for e in encoded if e.problem is None]
            where = f"the held-out split of data ({cfg.data.source})"
        prompts, ids = distinct_prompts(rows, feats)
        prompts, ids = prompts[: int(ev.max_prompts)], ids[: int(ev.max_prompts)]
        if not prompts:
            raise UserError(f"evaluation: no held-out prompts in {where}; set evaluation.data or evaluation.enabled=false")
        conv = any(isinstance(p, list) for p in prompts)
        reward = reward_scorer(cfg, ev.reward_model, "evaluation.reward_model", conv) if ev.reward_model else None
        gen = Generation.from_mapping(OmegaConf.to_container(ev.generation, resolve=True))
        judge = resolve(str(ev.judge), "evaluation.judge") if ev.judge else None
        engine_node = OmegaConf.to_container(cfg.generation, resolve=True) if cfg.get("generation") else None
        from ..monitor.audit import audit_scorers

        return cls(tokenizer, prompts, ids, judge, reward, gen, int(ev.n_show), generation=engine_node,
                   scorers=audit_scorers(cfg, reward_scorer, conv))

    def engine(self, policy):
        """The generation engine for sampling `policy` and its reference (rlhf.engines)."""
        from ..engines import engine_for

        return engine_for(self.generation, policy)

    def run(self, ctx: StageContext, policy, reference, against: str | None = None,
            shard: tuple[int, int] = (0, 1)) -> dict:
        """Evaluate, write eval.json into the run dir, log to W&B, print the table. `against`: the run
        (or model) dir the reference is, recorded as `reference_dir` (KL and win rates are against it).
        `shard` (rank, world): every rank of the group calls it, each sampling its share
        (`evaluate_policy`); rank 0 writes and prints, every rank returns the same figures."""
        from ..evaluation import evaluate_policy, format_eval
        from ..models import stop_token_ids
        from ..run.artifacts import write_json_atomic

        result = evaluate_policy(policy, self.tokenizer, self.prompts, self.prompt_ids, self.gen,
                                 stop_ids=stop_token_ids(self.tokenizer), reference=reference, judge=self.judge,
                                 reward=self.reward, n_show=self.n_show, engine=self.engine(policy),
                                 scorers=self.scorers, shard=shard)
        if against is not None:
            result["reference_dir"] = against
        if distributed.is_main():
            write_json_atomic(ctx.run_dir / "eval.json", result)
            print(format_eval(result), flush=True)
        if ctx.tracker is not None:
            ctx.tracker.log_eval(result, "eval", ctx.tracker.last_step, summary=True)
        return {k: v for k, v in result.items() if k not in ("samples", "generation", "per_sample")}


def reward_scorer(cfg: DictConfig, run_dir: str, what: str, conversational: bool = False):
    """A reward-model artifact as a scorer, loaded in the run's dtype (`rlhf.models`). Conversational
    prompts need a reward model whose tokenizer renders conversations (it was trained on them)."""
    from rlhf.data.chat import has_template
    from rlhf.reward import RewardScorer

    from ..models import load_reward_artifact

    model, tok, max_length = load_reward_artifact(str(run_dir), cfg.model, what)
    if conversational and not has_template(tok):
        raise UserError(f"{what}: the prompts are conversations but the reward model in {run_dir} has no chat template "
                        "(it was trained on plain text): train it on conversational rows, or give plain-text prompts")
    return RewardScorer(model, tok, max_length)


def policy_model_dir(run_dir: str, what: str) -> str:
    """The model directory of a policy artifact (`run_dir`), checked to be one (UserError naming `what`)."""
    from ..run.artifacts import read_artifact

    art = read_artifact(run_dir, expect_kinds=("policy",), what=what)
    return str(art.path(art.model_dir))


def load_reference(cfg: DictConfig, source: str, tokenizer):
    """The frozen reference for evaluation: the policy's starting weights, loaded again (whole, even
    while a ZeRO-3 config is live: only models a DeepSpeed engine owns are partitioned)."""
    from ..models import load_frozen_policy

    return load_frozen_policy(cfg.model, source, tokenizer)
