"""`rlhf report <dir>`: the reward–KL frontier of a sweep.

Reads every `eval.json` under a directory (e.g. a Hydra multirun over `trainer.beta`), and every
best-of-n `generate.json`, and writes next to them:

  frontier.png   left: gold score (the judge) against KL(policy || reference); right: the reward
                 model's (proxy) score against the same KL. Where the proxy keeps rising and the gold
                 score does not is over-optimisation (Gao et al. 2023). KL axis from 0, where the
                 reference sits; bars: bootstrap intervals over prompts on both axes (rlhf/report/stats.py).
  frontier.md    the same as a markdown table, with the intervals, n and the judge
  frontier.json  the rows

and logs the table and the figure to W&B (offline when no API key), in the W&B group of the runs it
reads (a sweep's members share `<experiment>/<sweep dir>`), unless --no-wandb.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UserError
from .stats import CONFIDENCE, N_RESAMPLES, SEED, prompt_bootstrap


def _placement(cfg: dict) -> tuple[str, str | None]:
    """(method label, knob) of a run on the frontier, as its stage declares them (FACTS.frontier_label,
    FACTS.knob; rlhf/stages/__init__.py); a stage this code does not know is labelled by its name."""
    from ..stages import beta_knob, facts, stage_name

    stage, t = cfg.get("stage") or {}, cfg.get("trainer") or {}
    if cfg.get("rounds_of"):  # a round of iterative DPO / rejection sampling (rlhf.pipeline.rounds): the rounds draw one line
        return str(cfg["rounds_of"]), f"round {cfg.get('round')}"
    try:
        f = facts(stage)
    except UserError:
        return stage_name(cfg), beta_knob(t)
    return f.frontier_label(cfg), f.knob(t)


def _intervals(ev: dict, score: str) -> dict:
    """Bootstrap intervals over prompts from eval.json's `per_sample` arrays ({} for an eval.json without them)."""
    per = ev.get("per_sample")
    if not per:
        return {}
    out: dict = {}
    for key, name in (("kl", "kl"), ("policy", f"{score}_policy"), ("reference", f"{score}_reference"),
                      ("rm_policy", "rm_policy"), ("rm_reference", "rm_reference"),
                      ("audit_policy", "audit_policy"), ("audit_reference", "audit_reference")):
        if per.get(name):
            iv = prompt_bootstrap(per[name], per["prompt_index"])
            out[f"{key}_ci"] = [iv.low, iv.high]
            out["n_prompts"], out["n_samples"] = iv.n_prompts, iv.n_samples
    pol, ref = per.get(f"{score}_policy"), per.get(f"{score}_reference")
    if pol and ref:  # paired: the policy's and the reference's sample share prompt and seed
        iv = prompt_bootstrap([p - r for p, r in zip(pol, ref, strict=True)], per["prompt_index"])
        out["gain_ci"] = [iv.low, iv.high]
    return out


def skipped(path: Path, why: str) -> None:
    """One line per file the report leaves out, on stderr: which file and why."""
    print(f"rlhf report: skipping {path}: {why}", file=sys.stderr)


def _readable(path: Path, required: tuple[str, ...]) -> dict | None:
    """The JSON object in `path` with a number under each `required` key; else None, said by `skipped`
    (a run killed while writing it, a file edited by hand, an undefined statistic stored as null)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        skipped(path, f"not valid JSON ({e})")
        return None
    if not isinstance(data, dict):
        skipped(path, f"expected a JSON object, got {type(data).__name__}")
        return None
    gone = [k for k in required if isinstance(data.get(k), bool) or not isinstance(data.get(k), int | float)]
    if gone:
        skipped(path, f"{', '.join(gone)}: {'missing' if any(k not in data for k in gone) else 'not a number'}")
        return None
    return data


def collect(root: Path) -> list[dict]:
    import yaml

    rows = []
    for ev_path in sorted(root.rglob("eval.json")):
        run = ev_path.parent
        ev = _readable(ev_path, ("kl", "n_prompts"))
        if ev is None:
            continue
        try:
            cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            skipped(run / "config.yaml", f"not readable YAML ({str(e).splitlines()[0]})")
            continue
        cfg = cfg if isinstance(cfg, dict) else {}
        t, evaluation, logger = cfg.get("trainer") or {}, cfg.get("evaluation") or {}, cfg.get("logger") or {}
        score = "gold" if "gold_policy" in ev else "rm"
        if f"{score}_policy" not in ev:
            continue
        if any(not isinstance(ev.get(k), int | float) for k in (f"{score}_policy", f"{score}_reference")):
            skipped(ev_path, f"{score}_policy / {score}_reference: not numbers")
            continue
        method, knob = _placement(cfg)
        trained_nothing = (cfg.get("stage") or {}).get("name") == "eval"
        rows.append({
            "run": str(run.relative_to(root)) or ".", "method": method, "knob": knob,
            # a `stage=eval` run (rejection sampling's rounds) trained nothing: its trainer knobs are not its policy's
            "beta": None if trained_nothing else t.get("beta", t.get("kl_coef")),
            "learning_rate": None if trained_nothing else t.get("learning_rate"), "kl": ev["kl"], "score": score,
            "policy": ev[f"{score}_policy"], "reference": ev[f"{score}_reference"],
            "win_rate": ev.get(f"{score}_win_rate"), "rm_policy": ev.get("rm_policy"),
            "rm_reference": ev.get("rm_reference"), "length": ev.get("policy_len"),
            "audit_policy": ev.get("audit_policy"), "audit_reference": ev.get("audit_reference"),  # rlhf.monitor.audit
            "n_prompts": ev.get("n_prompts"), "n_samples": ev.get("n_samples"),
            "judge": evaluation.get("judge"), "reward_model": evaluation.get("reward_model"),
            "wandb_group": logger.get("group"), "wandb_project": logger.get("project"),
            **_intervals(ev, score),
        })
    for gen_path in sorted(root.rglob("generate.json")):
        g = _readable(gen_path, ())
        if g is None or g.get("output") != "best_of_n":
            continue
        need = ("kl_bound", "best_of_n_gold" if "best_of_n_gold" in g else "best_of_n_score",
                "single_sample_gold" if "best_of_n_gold" in g else "single_sample_score")
        if (gone := [k for k in need if not isinstance(g.get(k), int | float)]):
            skipped(gen_path, f"no number under {', '.join(gone)}")
            continue
        gold = "best_of_n_gold" in g
        rows.append({
            "run": str(gen_path.parent.relative_to(root)), "method": "best-of-n", "beta": None,
            "knob": f"n={g.get('best_of_n')}",
            "learning_rate": None, "kl": g["kl_bound"], "score": "gold" if gold else "scorer",
            "policy": g["best_of_n_gold" if gold else "best_of_n_score"],
            "reference": g["single_sample_gold" if gold else "single_sample_score"],
            "win_rate": None, "rm_policy": None, "length": g.get("mean_len"), "n": g.get("best_of_n"),
            "n_prompts": g.get("prompts"), "judge": g.get("scorer"),
        })
    return rows


def judge_names(rows: list[dict]) -> list[str]:
    """The gold judges named in the runs' configs, short (`rlhf.judges.vader` and `vader` are one)."""
    return sorted({str(r["judge"]).replace(":", ".").rsplit(".", 1)[-1] for r in rows if r.get("judge")})


def n_label(rows: list[dict]) -> str:
    """`n = 95 prompts × 2 samples` (or a range when runs differ), from the rows with intervals."""
    ns = sorted({(r["n_prompts"], r["n_samples"] // r["n_prompts"]) for r in rows if r.get("kl_ci")})
    if not ns:
        return "no per-sample data: no intervals"
    if len(ns) == 1:
        return f"n = {ns[0][0]} prompts × {ns[0][1]} samples per run"
    return f"n = {min(p for p, _ in ns)}–{max(p for p, _ in ns)} prompts per run"


def interval_note(rows: list[dict]) -> str:
    return (f"{CONFIDENCE:.0%} bootstrap intervals over prompts ({N_RESAMPLES} resamples, seed {SEED}; "
            f"a prompt's samples kept together); {n_label(rows)}")


def markdown(rows: list[dict]) -> str:
    def f(x, fmt="{:.3f}"):
        return fmt.format(x) if isinstance(x, int | float) else "-"

    def ci(x, c, fmt="{:.3f}"):
        return f(x, fmt) + (f" [{fmt.format(c[0])}, {fmt.format(c[1])}]" if c else "")

    judges = ", ".join(sorted({str(r["judge"]) for r in rows if r.get("judge")})) or "none (reward-model score)"
    rms = sorted({str(r["reward_model"]) for r in rows if r.get("reward_model")})
    audit = any(r.get("audit_policy") is not None for r in rows)  # rlhf.monitor.audit: a column only where there is one
    lines = [f"Gold judge: {judges}. Reward model (proxy): {', '.join(rms) or 'none'}.", "",
             f"[lo, hi]: {interval_note(rows)}.", "",
             "| method | setting | lr | n prompts × samples | KL (nats) | gold: reference | gold: policy | gain | "
             f"win rate | RM: policy |{' audit: policy |' if audit else ''} run |",
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if audit else "")]
    for r in sorted(rows, key=lambda r: (r["method"], r["kl"])):
        n = f"{r['n_prompts']} × {r['n_samples'] // r['n_prompts']}" if r.get("n_samples") and r.get("n_prompts") else "-"
        lines.append(f"| {r['method']} | {r.get('knob') or '-'} | {f(r['learning_rate'], '{:g}')} | {n} | "
                     f"{ci(r['kl'], r.get('kl_ci'), '{:.2f}')} | {ci(r['reference'], r.get('reference_ci'))} | "
                     f"{ci(r['policy'], r.get('policy_ci'))} | {ci(r['policy'] - r['reference'], r.get('gain_ci'), '{:+.3f}')} | "
                     f"{f(r['win_rate'])} | {ci(r['rm_policy'], r.get('rm_policy_ci'))} | "
                     + (f"{ci(r.get('audit_policy'), r.get('audit_policy_ci'))} | " if audit else "") + f"{r['run']} |")
    return "\n".join(lines) + "\n"


def wandb_group(rows: list[dict], root: Path) -> str | None:
    """The W&B group of the runs the report reads (one sweep: one group). A sweep over several
    experiments puts each in its own `<experiment>/<sweep>` group; the report then takes the
    sweep directory's name. None when no run logged to W&B."""
    groups = sorted({r["wandb_group"] for r in rows if r.get("wandb_group")})
    if len(groups) <= 1:
        return groups[0] if groups else None
    return root.resolve().name


def log_wandb(rows: list[dict], root: Path, png: Path) -> str | None:
    import os

    import wandb

    from ..tracking import wandb_api_key_configured

    mode = os.environ.get("WANDB_MODE") or ("online" if wandb_api_key_configured() else "offline")
    projects = {r["wandb_project"] for r in rows if r.get("wandb_project")}
    project = projects.pop() if len(projects) == 1 else os.environ.get("WANDB_PROJECT", "rlhf")
    group = wandb_group(rows, root)
    run = wandb.init(project=project, job_type="report", name=f"frontier/{root.name}", group=group,
                     dir=str(root), mode=mode, reinit="finish_previous",
                     config={"judges": judge_names(rows), "intervals": interval_note(rows),
                             "groups": sorted({r["wandb_group"] for r in rows if r.get("wandb_group")})})
    cols = ["method", "knob", "beta", "kl", "policy", "reference", "rm_policy", "n_prompts"]
    data = [[r.get(c) for c in cols] + [*(r.get("kl_ci") or [None, None]), *(r.get("policy_ci") or [None, None])]
            for r in rows]
    table = wandb.Table(columns=[*cols, "kl_low", "kl_high", "policy_low", "policy_high"], data=data)
    wandb.log({"frontier/table": table, "frontier/image": wandb.Image(str(png)),
               "frontier/plot": wandb.plot.scatter(table, "kl", "policy", title="gold score vs KL")})
    where = run.dir
    run.finish()
    return where


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rlhf report", description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path, help="a sweep (multirun) or pipeline directory holding eval.json files")
    ap.add_argument("--no-wandb", action="store_true", help="only write the PNG, markdown and JSON")
    ap.add_argument("--kl-max", type=float, default=None, metavar="NATS",
                    help="end the figure's KL axis here (the low-KL range; the table keeps every run)")
    a = ap.parse_args(argv)
    try:
        if a.kl_max is not None and not a.kl_max > 0:
            raise UserError(f"rlhf report: --kl-max: expected a number of nats > 0, got {a.kl_max:g}")
        if not a.dir.is_dir():
            raise UserError(f"rlhf report: {a.dir} is not a directory")
        rows = collect(a.dir)
        if not rows:
            raise UserError(f"rlhf report: no eval.json (or best-of-n generate.json) under {a.dir}")
    except UserError as e:
        print(f"rlhf: error: {e.message}", file=sys.stderr)
        return 2
    from .plot import plot

    png, md = a.dir / "frontier.png", a.dir / "frontier.md"
    plot(rows, png, judges=judge_names(rows), note=interval_note(rows), kl_max=a.kl_max)
    md.write_text(markdown(rows))
    (a.dir / "frontier.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))
    print(f"wrote {png}, {md}")
    if not a.no_wandb:
        print(f"W&B: {log_wandb(rows, a.dir, png)} (group {wandb_group(rows, a.dir)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
