"""`rlhf report <dir>`: the reward–KL frontier of a sweep.

Reads every `eval.json` under a directory (e.g. a Hydra multirun over `trainer.beta`), and every
best-of-n `generate.json`, and writes next to them:

  frontier.png   gold score (y) against KL(policy || reference) (x), one line per method
  frontier.md    the same as a markdown table
  frontier.json  the rows

and logs the table and a scatter plot to W&B (offline when no API key) unless --no-wandb.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UserError


def _method(cfg: dict) -> str:
    stage = (cfg.get("stage") or {}).get("name", "?")
    if stage == "dpo":
        losses = (cfg.get("trainer") or {}).get("loss_type") or ["sigmoid"]
        return "dpo" if losses == ["sigmoid"] else "dpo[" + "+".join(losses) + "]"
    return stage


def _knob(method: str, t: dict) -> str | None:
    """The setting that places a run on the frontier: DPO/GRPO/RLOO β, PPO's KL coefficient or target."""
    if method == "ppo":
        if t.get("kl_control", "adaptive") == "adaptive":
            return f"target={t.get('kl_target', 6.0):g}"
        return f"β={t.get('kl_coef'):g}" if t.get("kl_coef") is not None else None
    return f"β={t['beta']:g}" if isinstance(t.get("beta"), int | float) else None


def collect(root: Path) -> list[dict]:
    import yaml

    rows = []
    for ev_path in sorted(root.rglob("eval.json")):
        run = ev_path.parent
        ev = json.loads(ev_path.read_text())
        cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
        t = cfg.get("trainer") or {}
        score = "gold" if "gold_policy" in ev else "rm"
        if f"{score}_policy" not in ev:
            continue
        rows.append({
            "run": str(run.relative_to(root)) or ".", "method": _method(cfg), "knob": _knob(_method(cfg), t),
            "beta": t.get("beta", t.get("kl_coef")),
            "learning_rate": t.get("learning_rate"), "kl": ev["kl"], "score": score,
            "policy": ev[f"{score}_policy"], "reference": ev[f"{score}_reference"],
            "win_rate": ev.get(f"{score}_win_rate"), "rm_policy": ev.get("rm_policy"),
            "length": ev.get("policy_len"),
        })
    for gen_path in sorted(root.rglob("generate.json")):
        g = json.loads(gen_path.read_text())
        if g.get("output") != "best_of_n":
            continue
        gold = "best_of_n_gold" in g
        rows.append({
            "run": str(gen_path.parent.relative_to(root)), "method": "best-of-n", "beta": None,
            "knob": f"n={g.get('best_of_n')}",
            "learning_rate": None, "kl": g["kl_bound"], "score": "gold" if gold else "scorer",
            "policy": g["best_of_n_gold" if gold else "best_of_n_score"],
            "reference": g["single_sample_gold" if gold else "single_sample_score"],
            "win_rate": None, "rm_policy": None, "length": g.get("mean_len"), "n": g.get("best_of_n"),
        })
    return rows


def markdown(rows: list[dict]) -> str:
    def f(x, fmt="{:.3f}"):
        return fmt.format(x) if isinstance(x, int | float) else "-"

    lines = ["| method | setting | lr | KL (nats) | gold: reference | gold: policy | gain | win rate | RM score | run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["method"], r["kl"])):
        lines.append(f"| {r['method']} | {r.get('knob') or '-'} | {f(r['learning_rate'], '{:g}')} | {f(r['kl'], '{:.2f}')} | "
                     f"{f(r['reference'])} | {f(r['policy'])} | {f(r['policy'] - r['reference'], '{:+.3f}')} | "
                     f"{f(r['win_rate'])} | {f(r['rm_policy'])} | {r['run']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    refs = [r["reference"] for r in rows]
    ax.axhline(sum(refs) / len(refs), color="grey", ls=":", label="reference (KL = 0)")
    for method in sorted({r["method"] for r in rows}):
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["kl"])
        ax.plot([p["kl"] for p in pts], [p["policy"] for p in pts], marker="o", label=method)
        for p in pts:
            if p.get("knob"):
                ax.annotate(p["knob"], (p["kl"], p["policy"]), textcoords="offset points",
                            xytext=(4, -10), fontsize=8)
    ax.set_xlabel("KL(policy || reference), nats per sequence")
    ax.set_ylabel(f"mean {rows[0]['score']} score")
    ax.set_title("reward–KL frontier")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def log_wandb(rows: list[dict], root: Path, png: Path) -> str | None:
    import os

    import wandb

    from .tracking import wandb_api_key_configured

    mode = os.environ.get("WANDB_MODE") or ("online" if wandb_api_key_configured() else "offline")
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rlhf"), job_type="report", name=f"frontier/{root.name}",
                     dir=str(root), mode=mode, reinit="finish_previous")
    cols = ["method", "beta", "kl", "policy", "reference"]
    table = wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in rows])
    wandb.log({"frontier/table": table, "frontier/image": wandb.Image(str(png)),
               "frontier/plot": wandb.plot.scatter(table, "kl", "policy", title="gold score vs KL")})
    where = run.dir
    run.finish()
    return where


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rlhf report", description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path, help="a sweep (multirun) or pipeline directory holding eval.json files")
    ap.add_argument("--no-wandb", action="store_true", help="only write the PNG, markdown and JSON")
    a = ap.parse_args(argv)
    try:
        if not a.dir.is_dir():
            raise UserError(f"rlhf report: {a.dir} is not a directory")
        rows = collect(a.dir)
        if not rows:
            raise UserError(f"rlhf report: no eval.json (or best-of-n generate.json) under {a.dir}")
    except UserError as e:
        print(f"rlhf: error: {e.message}", file=sys.stderr)
        return 2
    png, md = a.dir / "frontier.png", a.dir / "frontier.md"
    plot(rows, png)
    md.write_text(markdown(rows))
    (a.dir / "frontier.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))
    print(f"wrote {png}, {md}")
    if not a.no_wandb:
        print(f"W&B: {log_wandb(rows, a.dir, png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
