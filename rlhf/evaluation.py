"""Did alignment happen, and at what KL cost? Policy vs reference on held-out prompts.

Both models sample from the same prompts with the same seeds, to the end of the response (EOS or
end of turn) or the `max_new_tokens` cap. Reported:

- gold score (the judge) and reward-model score, mean for policy and reference, and the win rate of
  the policy's sample over the reference's sample for the same prompt and seed (ties count 1/2);
- KL(policy || reference) = E_{y ~ policy}[log π(y|x) - log π_ref(y|x)] per sequence (the Monte
  Carlo estimate on the policy's own samples, unbiased at temperature 1, the default) and per token
  (the same sum over all samples divided by their tokens);
- response lengths (mean, quantiles) and the share of samples that ended before the cap: a KL of
  responses cut at the cap is the KL of truncated responses;
- the policy's entropy per token and the reference's, estimated on each model's own samples as
  the mean of −log p over their tokens (Monte Carlo; at temperature 1 the entropy of the model);
- any further named scorers (`scorers`: the optimised proxy, audit reward models `audit_<i>` whose
  per-sample mean is `audit`), each like the reward model: mean per side, gain and win rate;
- per-sample arrays (for bootstrap intervals over prompts) and a table of samples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from statistics import mean, pstdev

from . import distributed
from .data.chat import plain_text
from .sampling import as_reference, batches, logprob_fn, merge_samples, sample
from .schema import Generation

log = logging.getLogger(__name__)


def _win_rate(a: Sequence[float], b: Sequence[float]) -> float:
    return mean((x > y) + 0.5 * (x == y) for x, y in zip(a, b, strict=True))


def _lengths(ids: Sequence[Sequence[int]]) -> dict[str, float]:
    import numpy as np

    n = np.asarray([len(x) for x in ids], dtype=float)
    p10, p50, p90 = np.percentile(n, [10, 50, 90])
    return {"mean": float(n.mean()), "p10": float(p10), "p50": float(p50), "p90": float(p90), "max": float(n.max())}


def evaluate_policy(
    policy,
    tokenizer,
    prompts: Sequence,
    prompt_ids: Sequence[Sequence[int]],
    gen: Generation,
    *,
    stop_ids: Sequence[int],
    reference=None,
    judge: Callable | None = None,
    reward: Callable | None = None,
    n_show: int = 8,
    engine=None,
    scorers: dict[str, Callable] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> dict:
    """`prompts`: canonical prompts (text or messages) and `prompt_ids` their encoded ids
    (`rlhf.data.PromptEncoder`); `reference`: a model, or None when `policy` is a PEFT model (the
    reference is then the policy with its adapter disabled); `engine`: the generation engine both sides
    are sampled with (`rlhf.engines`; None: HF generate; the log-probs are the HF models' own);
    `scorers`: {name: (prompts, completions) -> scores}, given the canonical prompts as the reward
    model is.

    `shard` = (rank, world), world > 1: every rank of the process group calls this with its own
    copy (or ZeRO-3 partition) of the same models. Rank r samples the batches b with b % world == r
    (batch b keeps seed offset b: `rlhf.sampling.batches`), policy and reference, with both log-prob
    passes in the same pass, and scores its own samples with every scorer; the per-sample results
    are gathered to every rank (`rlhf.distributed.all_gather`), put in one-process order and the
    figures computed once from them: the same as one process on the same prompts and seeds, up to
    float differences, on every rank. The ranks run in lock-step (the same number of generation,
    log-prob and scoring passes; a rank short of work runs a dummy batch whose output is dropped), so
    models partitioned by ZeRO-3 (the trainer's policy and reference, PPO's reward model) can be used
    as they are: no rank loads a whole model. The judge and any reward model the evaluation loads
    itself (`evaluation.reward_model`, audit models) are whole on every rank: small here; at scale,
    score with a judge served elsewhere, or a reward model a DeepSpeed engine partitions."""
    rank, world = shard
    lockstep = world > 1
    logprob_fns = {"policy": logprob_fn(policy, temperature=gen.temperature),
                   "reference": logprob_fn(reference, reference_of=policy, temperature=gen.temperature)}
    pol = sample(policy, tokenizer, prompts, prompt_ids, gen, stop_ids=stop_ids, score_with=logprob_fns,
                 desc="eval: policy samples", engine=engine, shard=shard, lockstep=lockstep)
    with as_reference(policy, reference) as ref_model:
        ref = sample(ref_model, tokenizer, prompts, prompt_ids, gen, stop_ids=stop_ids, desc="eval: reference samples",
                     score_with={"self": logprob_fn(ref_model, temperature=gen.temperature)}, engine=engine,
                     shard=shard, lockstep=lockstep)
    named = [(n, fn) for n, fn in (("gold", judge), ("rm", reward), *(scorers or {}).items()) if fn is not None]
    # a lock-step rank scores as many samples as the busiest rank (padding dropped): same passes everywhere
    width = max(_n_samples(len(prompts), gen, (r, world)) for r in range(world)) if lockstep else None
    scores = {name: (_score(fn, name, pol, width, prompts[0]), _score(fn, name, ref, width, prompts[0]))
              for name, fn in named}
    if world > 1:
        pol, ref, scores = _gathered(pol, ref, scores)
    return _figures(pol, ref, scores, gen, n_prompts=len(prompts), n_show=n_show)


def _n_samples(n: int, gen: Generation, shard: tuple[int, int]) -> int:
    return gen.num_samples * sum(len(span) for _, span in batches(n, gen.batch_size, shard))


def _score(fn: Callable, name: str, s, width: int | None, filler) -> list[float]:
    """`fn` on the samples `s` (the judge reads plain-text prompts); with `width`, padded to that many
    samples with an empty response to `filler`, the padding's scores dropped."""
    prompts, completions = list(s.prompts), list(s.completions)
    pad = (width or 0) - len(prompts)
    prompts, completions = prompts + [filler] * pad, completions + [""] * pad
    if name == "gold":
        prompts = [plain_text(p) for p in prompts]
    return list(map(float, fn(prompts, completions)))[: len(s.prompts)]


def _gathered(pol, ref, scores: dict):
    """Every rank's samples and scores, in one-process order, on every rank: the scores travel as
    further per-sample columns of the samples through `merge_samples`."""
    for name, (p, r) in scores.items():
        pol.logprobs[f"score:{name}"], ref.logprobs[f"score:{name}"] = p, r
    shards = distributed.all_gather((pol, ref))
    pol, ref = merge_samples([s[0] for s in shards]), merge_samples([s[1] for s in shards])
    return pol, ref, {name: (pol.logprobs.pop(f"score:{name}"), ref.logprobs.pop(f"score:{name}")) for name in scores}


def _figures(pol, ref, scores: dict, gen: Generation, *, n_prompts: int, n_show: int) -> dict:
    """The figures of the module docstring, from all the samples and their scores."""
    kl = [p - r for p, r in zip(pol.logprobs["policy"], pol.logprobs["reference"], strict=True)]
    tokens = sum(len(c) for c in pol.completion_ids)
    ref_tokens = sum(len(c) for c in ref.completion_ids)
    result: dict = {
        "n_prompts": n_prompts,
        "n_samples": len(pol.completions),
        "kl": mean(kl),
        # undefined (NaN) over one sample, or over zero tokens (every response empty): never a made-up 0 or sum
        "kl_std": (sum((k - mean(kl)) ** 2 for k in kl) / (len(kl) - 1)) ** 0.5 if len(kl) > 1 else float("nan"),
        "kl_per_token": sum(kl) / tokens if tokens else float("nan"),
        "policy_len": mean(len(c) for c in pol.completion_ids),
        "reference_len": mean(len(c) for c in ref.completion_ids),
        "policy_ended_share": mean(pol.ended),
        "reference_ended_share": mean(ref.ended),
        "entropy_per_token": -sum(pol.logprobs["policy"]) / max(tokens, 1),
        "reference_entropy_per_token": -sum(ref.logprobs["self"]) / max(ref_tokens, 1),
        "policy_lengths": _lengths(pol.completion_ids),
        "reference_lengths": _lengths(ref.completion_ids),
        "generation": dict(gen.__dict__),
    }
    per_sample: dict[str, list] = {"prompt_index": list(pol.prompt_index), "kl": kl,
                                   "policy_len": [len(c) for c in pol.completion_ids]}
    audits = []
    for name, (p, r) in scores.items():
        _scored(result, per_sample, name, p, r)
        if name.startswith("audit_"):
            audits.append((p, r))
    if audits:  # the audit score: the members' mean per sample
        pol_audit = [mean(x) for x in zip(*(p for p, _ in audits), strict=True)]
        ref_audit = [mean(x) for x in zip(*(r for _, r in audits), strict=True)]
        _scored(result, per_sample, "audit", pol_audit, ref_audit)
    if result["policy_ended_share"] < 0.5 and distributed.is_main():  # said once, not by every rank
        log.warning("only %.0f%% of the policy's samples ended before max_new_tokens=%d: the KL is that of "
                    "truncated responses (raise evaluation.generation.max_new_tokens)",
                    100 * result["policy_ended_share"], gen.max_new_tokens)
    result["per_sample"] = per_sample
    result["samples"] = _table(pol, ref, kl, per_sample, n_show)
    return result


def _scored(result: dict, per_sample: dict, name: str, p: list[float], r: list[float]) -> None:
    """A scorer's figures: mean per side, gain, win rate, and the reference's spread (the unit in
    which `rlhf.monitor` compares scorers of different scales)."""
    per_sample[f"{name}_policy"], per_sample[f"{name}_reference"] = p, r
    result[f"{name}_policy"] = mean(p)
    result[f"{name}_reference"] = mean(r)
    result[f"{name}_gain"] = mean(p) - mean(r)
    result[f"{name}_win_rate"] = _win_rate(p, r)
    result[f"{name}_reference_std"] = pstdev(r) if len(r) > 1 else 0.0
    result[f"{name}_pooled_std"] = pstdev(p + r) if len(p + r) > 1 else 0.0  # where the reference's is 0


def _table(pol, ref, kl, per_sample: dict, n_show: int) -> list[dict]:
    rows = []
    for i in range(min(n_show, len(pol.completions))):
        row = {"prompt": plain_text(pol.prompts[i]), "reference": ref.completions[i], "policy": pol.completions[i],
               "kl": round(kl[i], 3)}
        for name in ("gold", "rm", "proxy", "audit"):
            if f"{name}_policy" in per_sample:
                row[f"{name}_reference"] = round(per_sample[f"{name}_reference"][i], 4)
                row[f"{name}_policy"] = round(per_sample[f"{name}_policy"][i], 4)
        rows.append(row)
    return rows


def format_eval(result: dict, title: str = "policy vs reference") -> str:
    """The before/after table printed at the end of a policy stage."""
    lines = [f"{title} on {result['n_prompts']} held-out prompts ({result['n_samples']} samples each side):",
             f"  {'':22}{'reference':>10}{'policy':>10}{'win rate':>10}"]
    for name, label in (("gold", "gold score (judge)"), ("rm", "reward model"), ("proxy", "optimised reward"),
                        ("audit", "audit reward models")):
        if f"{name}_policy" in result:
            lines.append(f"  {label:22}{result[name + '_reference']:>10.3f}{result[name + '_policy']:>10.3f}"
                         f"{result[name + '_win_rate']:>10.3f}")
    lines.append(f"  {'length (tokens)':22}{result['reference_len']:>10.1f}{result['policy_len']:>10.1f}")
    if "policy_ended_share" in result:
        lines.append(f"  {'ended before the cap':22}{result['reference_ended_share']:>10.1%}"
                     f"{result['policy_ended_share']:>10.1%}")
    per_token = f" ({result['kl_per_token']:.3f} per token)" if "kl_per_token" in result else ""
    lines.append(f"  KL(policy || reference) = {result['kl']:.2f} nats per sequence{per_token}")
    return "\n".join(lines)
