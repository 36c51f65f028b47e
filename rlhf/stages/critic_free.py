"""GRPO and RLOO stages: TRL's GRPOTrainer / RLOOTrainer (critic-free: the baseline is the other
samples of the same prompt), the policy from an SFT artifact, rewards from a reward-model artifact
and/or named reward functions (`rlhf.judges`). Prompts are validated by `rlhf.data.PromptEncoder`
and handed to TRL in their canonical form (text, or messages it renders with the same chat
template), so TRL's prompt ids are the ones validated. Ends with the same policy-vs-reference
evaluation as DPO and PPO, so the frontier report can put them side by side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from omegaconf import DictConfig, OmegaConf

from . import StageFacts, beta_knob, common, grpo_losses, stage_name
from .curves import Curves, attach
from .evaluator import PolicyEvaluator, finish_policy, load_reference, reward_scorer
from .inputs import PROMPT_KINDS, policy_inputs, prompt_encoder, row_metrics, train_prompts

log = logging.getLogger(__name__)

FACTS = StageFacts(reference=True, model="causal", online=True, frontier_label=stage_name, knob=beta_knob)
DATA_KINDS = PROMPT_KINDS
encoder = prompt_encoder  # prompts to sample from
TRAINER = None  # per stage name: TRAINERS
TRAINERS = {"grpo": "trl.GRPOConfig", "rloo": "trl.RLOOConfig"}


@dataclass
class Options:
    """`stage:` of stage=grpo / stage=rloo (conf/stage/grpo.yaml)."""

    reward_model: str | None = None
    reward_funcs: list[str] = field(default_factory=list)
    reward_aggregate: Literal["member", "mean", "min", "mean_minus_std"] = "member"  # an ensemble (rlhf.monitor.ensemble)
    reward_member: int = field(default=0, metadata={"ge": 0})
    reward_lambda: float = field(default=1.0, metadata={"ge": 0})


def problems(cfg: DictConfig) -> list[str]:
    from ..config import trainer_problems

    out = []
    if cfg.mode == "train":
        out += trainer_problems(TRAINERS[cfg.stage.name], dict(cfg.trainer), dict(cfg.model))
    if cfg.stage.name == "grpo":
        out += grpo_losses.problems(dict(cfg.trainer))  # TRL checks them only at the first loss
    st = cfg.stage
    if not st.get("reward_model") and not st.get("reward_funcs"):
        out.append(f"stage={st.name}: set stage.reward_model (a reward run dir) and/or stage.reward_funcs "
                   "(e.g. [vader], or module.attr)")
    from ..monitor.ensemble import stage_options_problems

    out += stage_options_problems(cfg)
    for spec in st.get("reward_funcs") or []:
        from ..errors import UserError
        from ..judges import resolve

        try:
            resolve(str(spec), "stage.reward_funcs")
        except UserError as e:
            out += e.problems
    return out


def as_trl_reward_func(fn, name: str):
    """TRL calls reward functions as ``f(prompts=..., completions=..., completion_ids=..., **columns)``
    with conversational completions as message lists, and logs them under ``__name__``."""
    from rlhf.data.chat import plain_text

    def reward_func(prompts, completions, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float(x) for x in fn([plain_text(p) for p in prompts], texts)]

    reward_func.__name__ = name
    return reward_func


def reward_functions(cfg: DictConfig, conversational: bool = False) -> tuple[list, list[str]]:
    """stage.reward_model (a reward run dir) and stage.reward_funcs (names or module.attr) -> TRL
    reward callables and their names."""
    from ..judges import resolve

    st, funcs, names = cfg.stage, [], []
    if st.get("reward_model"):
        from ..monitor.ensemble import stage_scorer

        scorer = stage_scorer(cfg, reward_scorer, conversational)  # an ensemble: its aggregate

        def reward_model(prompts, completions, **_):
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            return [float(x) for x in scorer(prompts, texts)]

        funcs.append(reward_model)
        names.append(f"reward_model ({st.reward_model})")
    for spec in st.get("reward_funcs") or []:
        funcs.append(as_trl_reward_func(resolve(str(spec), "stage.reward_funcs"), str(spec).rpartition(".")[2]))
        names.append(str(spec))
    return funcs, names


def summed_reward(cfg: DictConfig, funcs: list):
    """The reward the trainer optimises, as one scorer (prompts, completions) -> scores: the reward
    functions weighted by `trainer.reward_weights` (1 each by default) and summed, as TRL does."""
    weights = list(cfg.trainer.get("reward_weights") or [1.0] * len(funcs))

    def proxy(prompts, completions):
        per_func = [f(prompts=list(prompts), completions=list(completions)) for f in funcs]
        return [sum(w * s[i] for w, s in zip(weights, per_func, strict=True)) for i in range(len(completions))]

    return proxy


def run(cfg: DictConfig, run_dir: Path):
    import contextlib

    import trl
    from datasets import Dataset

    from ..engines import trl_vllm
    from ..errors import UserError
    from ..models import build_policy, count_parameters, grown_vocabulary

    name = cfg.stage.name
    config_cls, trainer_cls = {"grpo": (trl.GRPOConfig, trl.GRPOTrainer),
                               "rloo": (trl.RLOOConfig, trl.RLOOTrainer)}[name]
    with common.stage_run(cfg, run_dir) as ctx:
        source, init_art, tokenizer, splits = policy_inputs(cfg, encoder)
        prompts, _ = train_prompts(splits)
        funcs, reward_names = reward_functions(cfg, splits.conversational)
        evaluator = PolicyEvaluator.from_config(cfg, tokenizer, splits)

        def reference():  # during training: TRL's (beta > 0), None under LoRA (the adapter disabled), else loaded
            if trainer.ref_model is not None or cfg.peft.method != "none":
                return trainer.ref_model
            return load_reference(cfg, source, tokenizer)

        curves = Curves.from_config(ctx, evaluator, reference, proxy=summed_reward(cfg, funcs))
        ctx.begin()

        # Held-out evaluation is ours (rlhf.evaluation), so TRL's generation-heavy eval loop stays off.
        # generation=vllm: TRL's own colocated vLLM path, with the settings of generation.vllm (rlhf.engines.trl_vllm)
        gen_node = OmegaConf.to_container(cfg.generation, resolve=True) if cfg.get("generation") else {}
        use_vllm = gen_node.get("backend") == "vllm"
        args = ctx.trainer_config(config_cls, eval_strategy="no", **(trl_vllm.trl_args(gen_node, config_cls) if use_vllm else {}))
        grown = grown_vocabulary(cfg.model, source, tokenizer)
        if grown and args.beta and cfg.peft.method == "none":  # TRL reloads the reference from the policy's path
            raise UserError(f"model.chat_template: the template added {grown} tokens to {source}, and {name.upper()}'s "
                            "reference (loaded by TRL from that path) would not know them: run SFT with the template "
                            "first (its artifact carries them), or use peft=lora")
        policy = build_policy(cfg.model, cfg.peft, tokenizer)
        log.info("%s policy %s: %s; rewards: %s; KL beta %s (reference: %s)", name.upper(), source,
                 count_parameters(policy), ", ".join(reward_names), args.beta,
                 "none" if args.beta == 0 else
                 "the policy with its adapter disabled" if cfg.peft.method != "none" else source)
        with trl_vllm.patched(policy, gen_node) if use_vllm else contextlib.nullcontext():
            trainer = trainer_cls(model=policy, reward_funcs=funcs, args=args, processing_class=tokenizer,
                                  train_dataset=Dataset.from_dict({"prompt": prompts}))
            attach(ctx, trainer, curves)
            out = ctx.train(trainer)
        logged = [h for h in trainer.state.log_history if "reward" in h]
        metrics: dict = {
            **row_metrics(splits, len(trainer.train_dataset), 0),
            "prompts": len(prompts), "rewards": reward_names, "beta": args.beta,
            "num_generations": args.num_generations, **count_parameters(policy),
            **({"loss_type": args.loss_type, "importance_sampling_level": args.importance_sampling_level}
               if name == "grpo" else {}),
            "train_loss": out.training_loss, "train_runtime_s": out.metrics.get("train_runtime"),
            "reward_first": logged[0]["reward"] if logged else None,
            "reward_last": logged[-1]["reward"] if logged else None,
            "kl_last": logged[-1].get("kl") if logged else None,
        }
        extra = {"reference_dir": init_art.run_dir if init_art else source}
        if curves is not None:  # the monitors' summary; under monitor.publish=best the best point's policy
            curves.conclude(trainer.state.global_step, trainer.model, metrics, extra)
        if logged:
            log.info("%s: mean reward %.3f -> %.3f over %d logged steps", name.upper(), metrics["reward_first"],
                     metrics["reward_last"], len(logged))
        return finish_policy(ctx, evaluator, trainer.model, tokenizer, metrics, source=source,
                                    reference=curves.reference_model if curves is not None else None,
                                    engine=trainer.deepspeed, extra=extra)
