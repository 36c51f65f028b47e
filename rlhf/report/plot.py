"""The frontier figure of `rlhf report`: gold score and reward-model (proxy) score against KL, side by side.

Both panels share the KL axis, which starts at 0: the reference (the policy every run started from)
sits there. Each run is a point with its bootstrap interval over prompts on both axes (rows without
per-sample data, e.g. best-of-n's analytic KL bound, have no bars). Nothing is clipped: the figure is
saved with `bbox_inches="tight"`, which grows it to hold every label. Only `kl_max` (`rlhf report
--kl-max`) ends the KL axis early, to show the low-KL range where one far point squeezes the rest: the
lines run out of the frame toward the points beyond, and each panel names how many there are.
"""

from __future__ import annotations

from pathlib import Path


def _err(rows: list[dict], value: str, ci: str):
    """matplotlib's asymmetric error bars [[below...], [above...]] (0 where a row has no interval)."""
    below = [max(r[value] - r[ci][0], 0.0) if r.get(ci) else 0.0 for r in rows]
    above = [max(r[ci][1] - r[value], 0.0) if r.get(ci) else 0.0 for r in rows]
    return [below, above]


def _reference(ax, rows: list[dict], value: str, ci: str, color: str = "black") -> None:
    """The reference at KL = 0: one point per distinct reference mean (one for a sweep from one start)."""
    seen = {}
    for r in rows:
        if r.get(value) is not None:
            seen.setdefault(round(r[value], 6), r)
    for i, r in enumerate(seen.values()):
        ax.errorbar([0.0], [r[value]], yerr=_err([r], value, ci), fmt="s", color=color, capsize=3, zorder=3,
                    label="reference (KL = 0)" if i == 0 else None)
        ax.axhline(r[value], color=color, ls=":", lw=0.8, alpha=0.6)


def _join(knobs: list[str]) -> str:
    """["target=3", "target=6"] -> "target=3, 6"; settings of different knobs are listed whole."""
    names = {k.split("=", 1)[0] for k in knobs}
    if len(names) == 1 and all("=" in k for k in knobs):
        return f"{names.pop()}={', '.join(k.split('=', 1)[1] for k in knobs)}"
    return ", ".join(knobs)


def _label(ax, pts: list[dict], value: str, color: str) -> None:
    """Each point's setting beside it: runs that landed on the same point share one label, and
    neighbours alternate above and below so close points stay readable."""
    at: dict[tuple[float, float], list[str]] = {}
    for p in pts:
        if p.get("knob"):
            at.setdefault((p["kl"], p[value]), []).append(p["knob"])
    for i, ((x, y), knobs) in enumerate(sorted(at.items())):
        ax.annotate(_join(knobs), (x, y), textcoords="offset points", xytext=(5, 5 if i % 2 == 0 else -12),
                    fontsize=8, color=color)


def _panel(ax, rows: list[dict], value: str, ci: str, colors: dict[str, str], kl_max: float | None = None) -> None:
    ref_key = {"policy": "reference", "rm_policy": "rm_reference", "audit_policy": "audit_reference"}[value]
    _reference(ax, rows, ref_key, f"{ref_key}_ci")
    for method, color in colors.items():
        pts = sorted((r for r in rows if r["method"] == method and r.get(value) is not None), key=lambda r: r["kl"])
        if not pts:
            continue
        ax.errorbar([p["kl"] for p in pts], [p[value] for p in pts], xerr=_err(pts, "kl", "kl_ci"),
                    yerr=_err(pts, value, ci), fmt="-o", color=color, capsize=3, ms=5, label=method)
        _label(ax, pts, value, color)
    # From 0 (the reference), or from below 0 where an interval reaches there: the Monte Carlo KL
    # estimate of a policy close to its reference can be negative, and a bar is never cut.
    left = min(0.0, *((r.get("kl_ci") or [0.0])[0] for r in rows))
    right = max((r.get("kl_ci") or [r["kl"]] * 2)[1] for r in rows)
    beyond = [r for r in rows if r.get(value) is not None and kl_max is not None and r["kl"] > kl_max]
    if kl_max is not None:
        right = min(right, kl_max)
    span = right - left or 1.0
    ax.set_xlim(left - 0.03 * span, right + 0.15 * span)  # the reference's marker whole; room for labels
    if beyond:
        ax.text(0.99, 0.02, f"{len(beyond)} point(s) beyond {kl_max:g} nats: "
                + ", ".join(f"{r['method']} {r['kl']:.0f}" for r in sorted(beyond, key=lambda r: r["kl"])),
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="dimgray")
    ax.axvline(0.0, color="black", lw=0.6, alpha=0.4)
    ax.margins(y=0.12)
    ax.set_xlabel("KL(policy ‖ reference), nats per sequence")
    ax.grid(alpha=0.3)


def figure(rows: list[dict], *, judges: list[str], note: str, kl_max: float | None = None):
    """The matplotlib Figure: the gold panel, and beside it the proxy panel when the runs have RM scores
    and the audit panel when they have audit scores; `kl_max` (nats) ends the KL axis there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_rm = rows[0]["score"] == "gold" and any(r.get("rm_policy") is not None for r in rows)
    with_audit = any(r.get("audit_policy") is not None for r in rows)  # rlhf.monitor.audit: reward models not optimised
    colors = {m: f"C{i}" for i, m in enumerate(sorted({r["method"] for r in rows}))}
    n = 1 + with_rm + with_audit
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.6) if n > 1 else (6.5, 4.6),
                             sharex=True, squeeze=False, layout="constrained")
    gold, *rest = axes[0]
    _panel(gold, rows, "policy", "policy_ci", colors, kl_max)
    if rows[0]["score"] == "gold":
        gold.set_ylabel(f"gold score, judge: {', '.join(judges) or '?'}")
        gold.set_title("gold (judge)")
    else:
        gold.set_ylabel("reward-model score (no judge configured)")
        gold.set_title("reward model")
    if with_rm:
        _panel(rest[0], rows, "rm_policy", "rm_policy_ci", colors, kl_max)
        rest[0].set_ylabel("reward-model (proxy) score")
        rest[0].set_title("proxy (reward model): rising where gold flattens = over-optimisation", fontsize=10)
    if with_audit:
        _panel(rest[-1], rows, "audit_policy", "audit_policy_ci", colors, kl_max)
        rest[-1].set_ylabel("audit score (reward models not optimised)")
        rest[-1].set_title("audit: falling where the proxy rises = over-optimisation, no gold needed", fontsize=10)
    handles, labels = gold.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9, frameon=False)
    fig.suptitle(f"Reward–KL frontier\nbars: {note}", fontsize=10)
    return fig


def plot(rows: list[dict], path: Path, *, judges: list[str], note: str, kl_max: float | None = None) -> None:
    """Write the figure to `path` (atomically: a temporary file renamed into place)."""
    import matplotlib.pyplot as plt

    fig = figure(rows, judges=judges, note=note, kl_max=kl_max)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
