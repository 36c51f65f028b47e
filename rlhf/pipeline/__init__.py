"""`rlhf pipeline=<name>`: run a declared sequence of stages, each in its own run directory.

A step is a list of config overrides (`{pipeline_dir}` is replaced by the pipeline's directory);
`init_from: <step>` hands an earlier step's artifact to `model.init_from`, `data_from: <step>` its
generated data to `data.source`, `reward_from: <step>` its reward model to the evaluation (and, for
the online RL stages ppo/grpo/rloo, to `stage.reward_model`, the reward they are trained on). A step
whose directory already holds an artifact with the same config hash is skipped, so re-running a
pipeline only does what is missing. `pipeline.rounds` repeats a few steps round after round
(iterative DPO, rejection sampling: rlhf/pipeline/rounds.py).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..distributed import is_main
from ..errors import UserError
from ..run.artifacts import MANIFEST, config_hash, read_artifact, strict_json

log = logging.getLogger(__name__)
SKIP = ("pipeline", "hydra")
ROUND_KEYS = ("rounds", "reference")
# Root knobs of the demo-based pipelines that only some steps' configs declare (experiment=demo_*):
# passed to every step as `++key=value` (set where declared, a harmless extra key elsewhere).
SHARED_ROOT_KEYS = ("demo_dir",)


def step_configs(cfg: DictConfig, base_overrides: list[str]) -> list[tuple[str, DictConfig]]:
    """Compose every step's config up front, so a typo in step 3 fails before step 1 trains."""
    from hydra import compose

    pdir = Path(cfg.pipeline.dir).resolve()
    from .rounds import expand

    # (`rounds` and `reference` are the round pipelines' own root knobs: rlhf/pipeline/rounds.py)
    base = [o for o in base_overrides if o.split("=")[0].lstrip("+~") not in ROUND_KEYS
            and not o.split("=")[0].lstrip("+~").startswith(("pipeline", "hydra"))]
    base = [f"++{o.lstrip('+')}" if o.split("=")[0].lstrip("+") in SHARED_ROOT_KEYS else o for o in base]
    out, names = [], set()
    for step in expand(cfg.pipeline):
        overrides = [*base, *(o.replace("{pipeline_dir}", str(pdir)) for o in step.overrides),
                     f"run_dir={pdir / step.name}", f"experiment_name={cfg.experiment_name}"]
        for key, target in (("init_from", "model.init_from={}"), ("data_from", "data.source={}/data.jsonl"),
                            ("reward_from", "evaluation.reward_model={}")):
            if step.get(key):
                if step[key] not in names:
                    raise UserError(f"pipeline.steps.{step.name}.{key}: {step[key]!r} is not an earlier step")
                overrides.append(target.format(pdir / step[key]))
        try:
            step_cfg = compose(config_name="config", overrides=overrides)
            if step.get("reward_from") and _online(step_cfg):
                overrides.append(f"stage.reward_model={pdir / step.reward_from}")
                step_cfg = compose(config_name="config", overrides=overrides)
        except Exception as e:  # hydra's composition errors: a user mistake in the step
            raise UserError(f"pipeline step {step.name}: {e}") from None
        out.append((step.name, step_cfg))
        names.add(step.name)
    return out


def _online(cfg: DictConfig) -> bool:
    """The step's stage is trained on a reward (its FACTS.online); an unknown stage is said by validation."""
    from ..stages import facts

    try:
        return facts(cfg.stage).online
    except UserError:
        return False


def planned_scoring_problems(steps: list[tuple[str, DictConfig]]) -> list[str]:
    """Each step's reward models that an earlier step will train: can they score the step's policy's
    text (rlhf.run.scorable; those already trained were checked by each step's validation)."""
    from ..run.scorable import problems as scoring_problems
    from ..stages import facts

    planned = {str(Path(c.run_dir).expanduser().resolve()): c for _, c in steps}
    out = []
    for name, step_cfg in steps:
        try:
            causal = facts(step_cfg.stage).model == "causal"
        except UserError:
            continue  # an unknown stage: said by validation
        out += [f"step {name}: {p}" for p in scoring_problems(step_cfg, policy_text=causal, planned=planned)]
    return out


def run_pipeline(cfg: DictConfig, base_overrides: list[str]) -> dict:
    from ..runner import run_stage, validate

    steps = step_configs(cfg, base_overrides)
    problems = []
    for name, step_cfg in steps:  # every step's mistakes before the first step trains
        try:
            validate(step_cfg)
        except UserError as e:
            problems.append(f"step {name}: {e.message}")
    problems += planned_scoring_problems(steps)
    if problems:
        raise UserError(problems, title="pipeline config")
    results: dict = {}
    for name, step_cfg in steps:
        run_dir = Path(step_cfg.run_dir)
        digest = config_hash(OmegaConf.to_container(step_cfg, resolve=True))
        if (run_dir / MANIFEST).is_file():
            art = read_artifact(run_dir)
            if art.config_hash == digest:
                log.info("step %s: finished artifact with the same config in %s, skipping", name, run_dir)
                results[name] = {"skipped": True, **art.metrics}
                continue
            raise UserError(f"pipeline step {name}: {run_dir} holds a finished run with a different config "
                            f"(hash {art.config_hash} != {digest}); remove it or set pipeline.dir elsewhere")
        t0 = time.time()
        log.info("step %s -> %s", name, run_dir)
        art = run_stage(step_cfg, run_dir)
        results[name] = {"wall_s": round(time.time() - t0, 1), **art.metrics}
    if is_main():  # under a launcher rank 0 writes and prints the summary
        summary_path = Path(cfg.pipeline.dir) / "summary.json"
        summary_path.write_text(json.dumps(strict_json(results), indent=2, default=str, allow_nan=False) + "\n")
        print(format_summary(results))
    return results


def _f(x, fmt="{:.3f}"):
    return fmt.format(x) if isinstance(x, int | float) else "-"


def format_summary(results: dict) -> str:
    lines = ["", "== pipeline summary =="]
    for name, m in results.items():
        took = "skipped (already done)" if m.get("skipped") else f"{_f(m.get('wall_s'), '{:.0f}')} s"
        lines.append(f"[{name}] {took}")
        rows = m.get("rows")
        if rows:
            dropped = ", ".join(f"{k} {v}" for k, v in rows["dropped"].items()) or "none"
            lines.append(f"  rows: read {rows['read']} -> {rows['rows']} rows -> {rows['valid']} valid (dropped: {dropped})"
                         f" -> train {rows['train']} / eval {rows['eval']} (truncated {rows['truncated_train']} / "
                         f"{rows.get('truncated_eval', 0)})"
                         f" -> trained {rows.get('trained')}")
            if "prompts_train" in rows:
                lines.append(f"  distinct prompts: train {rows['prompts_train']} / eval {rows['prompts_eval']}, "
                             f"on both sides {rows['prompts_shared']}")
        if "eval_margin" in m:  # DPO, KTO, SimPO, ORPO
            name = str(m.get("objective") or ("kto" if "desirable_rows" in m else "dpo")).upper()
            lines.append(f"  held-out {name} margin {_f(m.get('eval_before_margin'))} -> {_f(m['eval_margin'])}, "
                         f"preference accuracy {_f(m.get('eval_accuracy'))} on {m.get('eval_rows')} pairs")
        elif "eval_loss_before" in m:
            after = m.get("eval_loss", m.get("eval_loss_after"))
            ppl = (f"   (perplexity {_f(m.get('eval_ppl_before'), '{:.2f}')} -> {_f(m.get('eval_ppl'), '{:.2f}')})"
                   if "eval_ppl" in m else "")
            lines.append(f"  held-out loss {_f(m['eval_loss_before'], '{:.4f}')} -> {_f(after, '{:.4f}')}{ppl}")
        if "eval_accuracy" in m and "eval_margin" not in m:
            before = (m.get("eval_before") or {}).get("accuracy")
            lines.append(f"  held-out pairwise accuracy {_f(before)} -> {_f(m['eval_accuracy'])} "
                         f"on {m.get('eval_rows')} rows ({(rows or {}).get('truncated_eval', 0)} truncated, none dropped)")
            by_k = (m.get("eval") or {}).get("accuracy_by_k")
            if by_k:
                lines.append("  accuracy by K: " + ", ".join(f"K={k} {_f(a)}" for k, a in by_k.items()))
        if "kl_coef_last" in m:  # PPO
            within = m.get("kl_last_half_within_30pct")
            lines.append(f"  PPO {m['iterations']} iterations: RM score {_f(m['score_first'])} -> "
                         f"{_f(m['score_last'])}, KL {_f(m['kl_last'], '{:.2f}')} nats, beta {_f(m['kl_coef_last'], '{:.4f}')}"
                         + (f"; last half within ±30% of the {m['kl_target']:g}-nat target {within:.0%} of iterations"
                            if within is not None else ""))
        if "num_generations" in m and m.get("reward_last") is not None:  # GRPO / RLOO
            lines.append(f"  mean training reward {_f(m['reward_first'])} -> {_f(m['reward_last'])} "
                         f"({m['num_generations']} samples per prompt, beta {m['beta']})")
        if "rows_written" in m:
            lines.append(f"  {m['samples']} samples of {m['prompts']} prompts scored by {m['scorer']} "
                         f"(mean {_f(m['score_mean'])}) -> {m['rows_written']} {m['data_kind']} rows")
        ev = m.get("policy_eval") or (m if "kl" in m and "n_prompts" in m else None)
        if ev:
            lines.append(f"  on {ev['n_prompts']} held-out prompts, {'reference':>9} {'policy':>8} {'win rate':>9}")
            for key, label in (("gold", "gold (judge)"), ("rm", "reward model")):
                if f"{key}_policy" in ev:
                    lines.append(f"    {label:<14}{ev[key + '_reference']:>12.3f} {ev[key + '_policy']:>8.3f} "
                                 f"{ev[key + '_win_rate']:>9.3f}")
            lines.append(f"    {'length':<14}{ev['reference_len']:>12.1f} {ev['policy_len']:>8.1f}")
            if "policy_ended_share" in ev:  # samples that reached EOS before the cap (evaluation.generation)
                lines.append(f"    {'ended (EOS)':<14}{ev['reference_ended_share']:>12.0%} {ev['policy_ended_share']:>8.0%}")
            per_token = f", {ev['kl_per_token']:.3f} per token" if ev.get("kl_per_token") is not None else ""
            lines.append(f"    KL(policy || reference) = {ev['kl']:.2f} nats per sequence{per_token}")
    from .rounds import wall_lines

    lines += wall_lines(results)  # a pipeline with rounds: wall time per round
    return "\n".join(lines)
