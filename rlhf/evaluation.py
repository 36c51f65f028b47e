"""Did alignment happen, and at what KL cost? Policy vs reference on held-out prompts.

Both models sample from the same prompts with the same seeds. Reported:

- gold score (the judge) and reward-model score, mean for policy and reference, and the win rate of
  the policy's sample over the reference's sample for the same prompt and seed (ties count 1/2);
- sequence-level KL(policy || reference) = E_{y ~ policy}[log π(y|x) - log π_ref(y|x)], the Monte
  Carlo estimate on the policy's own samples (unbiased at temperature 1, which is the default);
- mean response length in tokens, and a table of samples;
- `per_sample`: the same numbers per policy sample (KL, gold/RM score of the policy's and of the
  reference's sample with the same prompt and seed, prompt index), so a report can bootstrap over
  prompts (`rlhf report`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from statistics import mean

from .generation import GenerationConfig, completion_logprobs, sample

log = logging.getLogger(__name__)


def _win_rate(a: Sequence[float], b: Sequence[float]) -> float:
    return mean((x > y) + 0.5 * (x == y) for x, y in zip(a, b, strict=True))


def evaluate_policy(
    policy,
    tokenizer,
    prompts: Sequence[str],
    gen: GenerationConfig,
    *,
    reference=None,
    judge: Callable | None = None,
    reward: Callable | None = None,
    n_show: int = 8,
) -> dict:
    """`reference`: a model, or None when `policy` is a PEFT model (reference = adapter disabled)."""

    def ref_context():
        if reference is None:
            if not hasattr(policy, "disable_adapter"):
                raise ValueError("evaluate_policy: no reference model and the policy has no adapter to disable")
            return policy.disable_adapter()
        return contextlib.nullcontext()

    ref_model = reference if reference is not None else policy
    pol = sample(policy, tokenizer, prompts, gen, desc="eval: policy samples")
    with ref_context():
        ref = sample(ref_model, tokenizer, prompts, gen, desc="eval: reference samples")
        ref_lp = completion_logprobs(ref_model, pol.prompt_ids, pol.completion_ids, tokenizer.pad_token_id)
    pol_lp = completion_logprobs(policy, pol.prompt_ids, pol.completion_ids, tokenizer.pad_token_id)
    kl = pol_lp - ref_lp

    result: dict = {
        "n_prompts": len(prompts),
        "n_samples": len(pol.completions),
        "kl": kl.mean().item(),
        "kl_std": kl.std().item() if kl.numel() > 1 else 0.0,
        "policy_len": mean(len(c) for c in pol.completion_ids),
        "reference_len": mean(len(c) for c in ref.completion_ids),
        "generation": dict(gen.__dict__),
    }
    scores: dict[str, tuple[list[float], list[float]]] = {}
    for name, fn in (("gold", judge), ("rm", reward)):
        if fn is None:
            continue
        p, r = list(map(float, fn(pol.prompts, pol.completions))), list(map(float, fn(ref.prompts, ref.completions)))
        scores[name] = (p, r)
        result[f"{name}_policy"] = mean(p)
        result[f"{name}_reference"] = mean(r)
        result[f"{name}_gain"] = mean(p) - mean(r)
        result[f"{name}_win_rate"] = _win_rate(p, r)
    rows = []
    for i in range(min(n_show, len(pol.completions))):
        row = {"prompt": pol.prompts[i], "reference": ref.completions[i], "policy": pol.completions[i],
               "kl": round(kl[i].item(), 3)}
        for name, (p, r) in scores.items():
            row[f"{name}_reference"], row[f"{name}_policy"] = round(r[i], 4), round(p[i], 4)
        rows.append(row)
    result["samples"] = rows
    per_sample = {"prompt_index": list(pol.prompt_index), "kl": [round(x, 5) for x in kl.tolist()]}
    for name, (p, r) in scores.items():
        per_sample[f"{name}_policy"], per_sample[f"{name}_reference"] = p, r
    result["per_sample"] = per_sample
    return result


def format_eval(result: dict, title: str = "policy vs reference") -> str:
    """The before/after table printed at the end of a policy stage."""
    lines = [f"{title} on {result['n_prompts']} held-out prompts ({result['n_samples']} samples each side):",
             f"  {'':22}{'reference':>10}{'policy':>10}{'win rate':>10}"]
    for name, label in (("gold", "gold score (judge)"), ("rm", "reward model")):
        if f"{name}_policy" in result:
            lines.append(f"  {label:22}{result[name + '_reference']:>10.3f}{result[name + '_policy']:>10.3f}"
                         f"{result[name + '_win_rate']:>10.3f}")
    lines.append(f"  {'length (tokens)':22}{result['reference_len']:>10.1f}{result['policy_len']:>10.1f}")
    lines.append(f"  KL(policy || reference) = {result['kl']:.2f} nats per sequence")
    return "\n".join(lines)


def log_eval_to_wandb(result: dict, prefix: str = "eval") -> None:
    """Scalars and the samples table into the active W&B run, if any."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is None:
        return
    scalars = {f"{prefix}/{k}": v for k, v in result.items() if isinstance(v, int | float)}
    samples = result.get("samples") or []
    if samples:
        cols = list(samples[0])
        scalars[f"{prefix}/samples"] = wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in samples])
    wandb.log(scalars)
    for k, v in scalars.items():
        if not isinstance(v, wandb.Table):
            wandb.run.summary[k] = v

