"""Generate stage: sample k completions per prompt from a policy, score them with a judge or a
reward-model artifact, and write preference data the reward and DPO stages read like any other.

Outputs (`stage.output`):
  best_worst  one pair per prompt: highest- vs lowest-scored sample (the DPO paper's protocol)
  all_pairs   every pair of samples whose scores differ by more than `stage.min_gap`
  ranked      one ranked list per prompt (rank 0 = best, equal scores tie): the K-wise reward loss
  best        one SFT row per prompt: its best-scored sample as the completion (rejection sampling)
  best_of_n   no training data: the best-of-n baseline on held-out prompts (score of the best of n
              samples chosen by the scorer vs a single sample), with its analytic KL bound
Conversational prompts give conversational rows (the responses as assistant turns).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Literal

from omegaconf import DictConfig, OmegaConf

from .. import distributed
from ..schema import Generation
from . import StageFacts, beta_knob, common, stage_name
from .evaluator import reward_scorer
from .inputs import PROMPT_KINDS, distinct_prompts, policy_inputs, prompt_encoder, row_metrics

log = logging.getLogger(__name__)

FACTS = StageFacts(reference=False, model="causal", online=False, frontier_label=stage_name, knob=beta_knob)
DATA_KINDS = PROMPT_KINDS
encoder = prompt_encoder  # prompts to sample from
TRAINER = None


@dataclass
class Options:
    """`stage:` of stage=generate (conf/stage/generate.yaml)."""

    split: Literal["train", "eval"] = "train"
    num_prompts: int | None = field(default=None, metadata={"ge": 1})
    prompt_offset: int = field(default=0, metadata={"ge": 0})  # skip this many distinct prompts (rounds: fresh shards)
    judge: str | None = None
    reward_model: str | None = None
    output: Literal["best_worst", "all_pairs", "ranked", "best", "best_of_n"] = "best_worst"
    min_gap: float = field(default=0.0, metadata={"ge": 0})
    generation: Generation = field(default_factory=Generation)


def problems(cfg: DictConfig) -> list[str]:
    st, out = cfg.stage, []
    if not st.get("judge") and not st.get("reward_model"):
        out.append("stage=generate: set stage.judge (a name or module.attr) or stage.reward_model (a reward run dir)")
    if st.get("judge"):
        from ..errors import UserError
        from ..judges import resolve

        try:
            resolve(str(st.judge), "stage.judge")
        except UserError as e:
            out += e.problems
    n = (st.get("generation") or {}).get("num_samples", 2)
    if isinstance(n, int) and n < 2:
        out.append(f"stage.generation.num_samples: need at least 2 samples per prompt, got {n}")
    return out


def run(cfg: DictConfig, run_dir: Path):
    import torch

    from ..engines import engine_for
    from ..errors import UserError
    from ..judges import resolve
    from ..models import build_policy, stop_token_ids
    from ..sampling import merge_samples, sample

    st = cfg.stage
    with common.stage_run(cfg, run_dir) as ctx:
        source, _, tokenizer, splits = policy_inputs(cfg, encoder)
        use_eval = st.split == "eval" or st.output == "best_of_n"
        prompts, prompt_ids = distinct_prompts(splits.eval if use_eval else splits.train,
                                                      splits.eval_features if use_eval else splits.train_features)
        start = int(st.prompt_offset)
        end = start + int(st.num_prompts) if st.num_prompts else None
        prompts, prompt_ids = prompts[start:end], prompt_ids[start:end]
        if not prompts:
            raise UserError(f"stage=generate: no prompts in the {st.split} split of {splits.source}"
                            + (f" after the first stage.prompt_offset={start}" if start else ""))
        judge = resolve(str(st.judge), "stage.judge") if st.judge else None
        reward = (reward_scorer(cfg, st.reward_model, "stage.reward_model", splits.conversational)
                  if st.reward_model else None)
        ctx.begin()

        gen = Generation.from_mapping(OmegaConf.to_container(st.generation, resolve=True))
        with distributed.zero3_init_off():
            model = build_policy(cfg.model, OmegaConf.create({"method": "none"}), tokenizer)
        torch.manual_seed(int(cfg.seed))
        # Under a launcher each rank samples its share of the batches (same seeds as one process),
        # rank 0 puts them together, scores them and writes the data.
        mine = sample(model, tokenizer, prompts, prompt_ids, gen, stop_ids=stop_token_ids(tokenizer),
                      shard=(distributed.rank(), distributed.world_size()),
                      desc=f"sampling {gen.num_samples} x {len(prompts)}",
                      engine=engine_for(OmegaConf.to_container(cfg.generation, resolve=True), model))
        s = merge_samples(distributed.all_gather(mine))
        metrics, extra = distributed.on_main(_score_and_write, ctx.run_dir, st, prompts, s, gen.num_samples,
                                             judge, reward)
        metrics = {**row_metrics(splits, 0 if use_eval else len(prompts), len(prompts) if use_eval else 0),
                   **metrics}
        return common.finish(ctx, kind="data", model=None, tokenizer=None, metrics=metrics, extra=extra)


def _score_and_write(run_dir: Path, st, prompts, s, k: int, judge, reward) -> tuple[dict, dict]:
    """Rank 0: score the samples (the reward model ranks when given; the judge is then reported as
    gold), write samples.jsonl, the preference data and generate.json."""
    from rlhf.data.chat import plain_text

    from ..errors import UserError
    from ..run.artifacts import write_json_atomic

    texts = [plain_text(p) for p in s.prompts]
    scores = [float(x) for x in (reward(s.prompts, s.completions) if reward else judge(texts, s.completions))]
    gold = [float(x) for x in judge(texts, s.completions)] if (judge and reward) else None
    groups = [list(range(i * k, (i + 1) * k)) for i in range(len(prompts))]
    with open(run_dir / "samples.jsonl", "w") as f:
        for i, prompt in enumerate(prompts):
            rec = {"prompt": prompt, "completions": [s.completions[j] for j in groups[i]],
                   "scores": [scores[j] for j in groups[i]]}
            if gold:
                rec["gold"] = [gold[j] for j in groups[i]]
            f.write(json.dumps(rec) + "\n")

    metrics: dict = {"prompts": len(prompts), "samples": len(s.completions), "output": st.output,
                     "scorer": "reward_model" if reward else str(st.judge),
                     "score_mean": mean(scores), "mean_len": mean(len(c) for c in s.completion_ids),
                     "ended_share": mean(s.ended)}
    extra: dict = {}
    if st.output == "best_of_n":
        best = [max(g, key=lambda j: scores[j]) for g in groups]
        metrics.update(best_of_n=k, best_of_n_score=mean(scores[j] for j in best),
                       single_sample_score=mean(scores),
                       kl_bound=math.log(k) - (k - 1) / k)  # KL(best-of-n || base), Stiennon et al. 2020
        if gold:
            metrics.update(best_of_n_gold=mean(gold[j] for j in best), single_sample_gold=mean(gold))
        log.info("best-of-%d: score %.3f vs %.3f for one sample (KL <= %.2f nats)", k,
                 metrics["best_of_n_score"], metrics["single_sample_score"], metrics["kl_bound"])
    else:
        data, gaps, n_ties = _preference_rows(prompts, groups, s.completions, scores, st.output, float(st.min_gap))
        if not data:
            raise UserError(f"stage=generate: every prompt's samples scored within min_gap={st.min_gap}; "
                            "no preference data to write (more samples, or a lower min_gap)")
        tmp = run_dir / ".data.jsonl.tmp"
        with open(tmp, "w") as f:
            for row in data:
                f.write(json.dumps(row) + "\n")
        tmp.replace(run_dir / "data.jsonl")
        kind = {"ranked": "ranked", "best": "sft"}.get(st.output, "pair")
        metrics.update(rows_written=len(data), prompts_without_preference=n_ties, data_kind=kind)
        if kind == "pair":
            metrics["score_gap_mean"] = mean(gaps)
        extra = {"data_file": "data.jsonl", "data_kind": kind}
        log.info("wrote %d %s rows to %s (%d prompts had no score gap)", len(data), kind,
                 run_dir / "data.jsonl", n_ties)
    write_json_atomic(run_dir / "generate.json", metrics)
    return metrics, extra


def _preference_rows(prompts, groups, completions, scores, output: str, min_gap: float):
    """(rows, score gaps of the pairs, prompts with no usable preference). No `margin` column: the
    reward stage would read it as a required reward margin, and the judge's scale is not the RM's."""
    rows, gaps, n_ties = [], [], 0
    for prompt, g in zip(prompts, groups, strict=True):
        # identical texts carry no preference: keep one of each
        uniq = list({completions[j]: j for j in g}.values())
        ordered = sorted(uniq, key=lambda j: -scores[j])
        if len(ordered) < 2 or scores[ordered[0]] - scores[ordered[-1]] <= min_gap:
            n_ties += 1
            continue
        if output == "best":  # rejection sampling: the best sample as an SFT completion
            rows.append({"prompt": prompt, "completion": _turn(prompt, completions[ordered[0]])})
            gaps.append(scores[ordered[0]] - scores[ordered[-1]])
        elif output == "best_worst":
            b, w = ordered[0], ordered[-1]
            rows.append({"prompt": prompt, "chosen": _turn(prompt, completions[b]),
                         "rejected": _turn(prompt, completions[w])})
            gaps.append(scores[b] - scores[w])
        elif output == "all_pairs":
            for a in range(len(ordered)):
                for c in range(a + 1, len(ordered)):
                    i, j = ordered[a], ordered[c]
                    if scores[i] - scores[j] > min_gap:
                        rows.append({"prompt": prompt, "chosen": _turn(prompt, completions[i]),
                                     "rejected": _turn(prompt, completions[j])})
                        gaps.append(scores[i] - scores[j])
        else:  # ranked: equal scores share a rank
            distinct = sorted({scores[j] for j in ordered}, reverse=True)
            rows.append({"prompt": prompt, "responses": [_turn(prompt, completions[j]) for j in ordered],
                         "ranks": [distinct.index(scores[j]) for j in ordered]})
    return rows, gaps, n_ties


def _turn(prompt, completion: str):
    """A sample as the response of a row: text, or an assistant turn when the prompt is a conversation."""
    return [{"role": "assistant", "content": completion}] if isinstance(prompt, list) else completion
