"""Over-optimisation seen while it happens: drift monitors at every evaluation point during DPO, PPO,
GRPO and RLOO, and the best evaluation point's policy kept for publishing.

At each point of the evaluation during training (`rlhf.stages.curves`, every `evaluation.every_steps`
optimizer steps, on the same held-out prompts and seeds) the monitor reads what
`rlhf.evaluation.evaluate_policy` measured and computes one signal per monitor:

- `kl_per_token`: KL(policy ‖ reference) per token of the policy's samples, nats.
- `kl_growth`: that KL's growth since the previous point (step 0: the reference, KL 0), nats per
  token per optimizer step: a KL that accelerates is a policy leaving its leash.
- `length_ratio`: the policy's mean response length over the reference's, or its inverse when
  shorter (>= 1): length is the commonest reward hack (Singhal et al. 2023).
- `eos_drop`: the share of the reference's samples that end (EOS / end of turn) before the cap minus
  the policy's: a policy that stops ending its answers is gaming a length-sensitive reward.
- `entropy_drop`: 1 − the policy's entropy per token / the reference's (both Monte Carlo estimates
  on each model's own samples): mode collapse.
- `divergence`: the optimised proxy's gain over the reference minus the audit's, each in units of
  its own spread over the reference's samples (so scorers of different scales compare): the proxy
  rising while reward models that were not optimised do not is over-optimisation (Gao et al. 2023;
  Coste et al. 2023). The proxy is the stage's own reward (`proxy`) or, else, `evaluation.reward_model`;
  the audit is the mean of `evaluation.audit_reward_models`.
- `audit_drop`, `gold_drop`: how far the audit's (the gold judge's) gain has fallen below its best
  point so far, in the same units.

A signal above its `threshold` fires: `warn` logs it, `stop` also ends training after this point.
Every value is logged as `monitor/<name>` and every firing as `monitor/fired/<name>` (W&B,
TensorBoard, history.jsonl, at the step), with a `monitor/firings` table; the firings are in
metrics.json (`monitor`) and the run's W&B summary. With `publish: best` the trainable weights of the
point with the best audit score (else gold) are kept in CPU memory (under ZeRO-3 gathered one
parameter at a time and kept by rank 0) and published instead of the last step's (`artifact.json` `extra.published` and the model card say which step, why, and the last
step's figures beside it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from ..distributed import copy_params, load_params

log = logging.getLogger(__name__)

SIGNALS = ("kl_per_token", "kl_growth", "length_ratio", "eos_drop", "entropy_drop", "divergence", "audit_drop",
           "gold_drop")
SHOWN = ("kl", "kl_per_token", "policy_len", "policy_ended_share", "entropy_per_token", "proxy_policy",
         "rm_policy", "audit_policy", "gold_policy")  # the figures published beside each other


@dataclass
class Rule:
    """One monitor: fire above `threshold` (null: off)."""

    threshold: float | None = None
    action: Literal["warn", "stop"] = "warn"


@dataclass
class MonitorOptions:
    """`monitor:` (conf/monitor/*.yaml)."""

    enabled: bool = True
    publish: Literal["last", "best"] = "last"
    best_by: Literal["auto", "audit", "gold"] = "auto"
    kl_per_token: Rule = field(default_factory=Rule)
    kl_growth: Rule = field(default_factory=Rule)
    length_ratio: Rule = field(default_factory=Rule)
    eos_drop: Rule = field(default_factory=Rule)
    entropy_drop: Rule = field(default_factory=Rule)
    divergence: Rule = field(default_factory=Rule)
    audit_drop: Rule = field(default_factory=Rule)
    gold_drop: Rule = field(default_factory=Rule)


def problems(cfg) -> list[str]:
    """What `rlhf.config.validate` refuses before anything trains (the audit entries included)."""
    from .audit import problems as audit_problems

    mon, ev = cfg.get("monitor"), cfg.evaluation
    if ev.get("audit_reward_models"):
        return audit_problems(cfg) + _publish_problems(mon, ev)
    return _publish_problems(mon, ev)


def _publish_problems(mon, ev) -> list[str]:
    if mon is None or not mon.get("enabled") or mon.get("publish") != "best":
        return []
    out = []
    if not ev.get("every_steps") or not ev.get("enabled"):
        out.append("monitor.publish=best: the best policy is chosen among the evaluation points during training; "
                   "set evaluation.every_steps=N (and evaluation.enabled=true)")
    by = mon.get("best_by")
    if by in ("auto", "audit") and not ev.get("audit_reward_models") and (by == "audit" or not ev.get("judge")):
        out.append(f"monitor.publish=best (best_by={by}): nothing to rank the points by; set "
                   "evaluation.audit_reward_models (reward run dirs or judges) or evaluation.judge (gold)")
    if by == "gold" and not ev.get("judge"):
        out.append("monitor.best_by=gold: set evaluation.judge (the gold judge)")
    return out


def _gain_z(result: dict, name: str) -> float | None:
    """A scorer's gain over the reference in units of its spread over the reference's samples (over
    both sides' samples where the reference's are all alike); None without a scorer or a spread."""
    if f"{name}_gain" not in result:
        return None
    unit = result.get(f"{name}_reference_std") or result.get(f"{name}_pooled_std") or 0.0
    return result[f"{name}_gain"] / unit if unit > 1e-9 else None


class Monitor:
    """`observe(step, result, model)` after each evaluation point; `stop`: a `stop` monitor fired;
    `restore_best(model)` before publishing under `publish: best`."""

    def __init__(self, options, tracker=None):
        self.opt, self.tracker = options, tracker
        self.firings: list[dict] = []
        self.stop: dict | None = None  # the firing that stopped training
        self.points: list[dict] = []
        self._best_z: dict[str, float] = {}
        self.best: dict | None = None  # {"step", "score", "figures"}
        self._best_weights: dict | None = None

    @classmethod
    def from_config(cls, cfg, tracker=None) -> Monitor | None:
        from omegaconf import OmegaConf

        node = cfg.get("monitor")
        if node is None or not node.enabled:
            return None
        raw = OmegaConf.to_container(node, resolve=True)
        rules = {k: Rule(**raw[k]) for k in SIGNALS if k in raw}
        return cls(MonitorOptions(**{**{k: v for k, v in raw.items() if k not in SIGNALS}, **rules}), tracker)

    # ---- signals ------------------------------------------------------------------------------
    def signals(self, step: int, r: dict) -> dict[str, float]:
        prev = self.points[-1] if self.points else {"step": 0, "kl_per_token": 0.0}
        out = {"kl_per_token": r["kl_per_token"],
               "kl_growth": (r["kl_per_token"] - prev["kl_per_token"]) / max(step - prev["step"], 1)}
        pl, rl = r["policy_len"], r["reference_len"]
        if pl > 0 and rl > 0:
            out["length_ratio"] = max(pl / rl, rl / pl)
        out["eos_drop"] = r["reference_ended_share"] - r["policy_ended_share"]
        if r.get("reference_entropy_per_token", 0) > 0:
            out["entropy_drop"] = 1 - r["entropy_per_token"] / r["reference_entropy_per_token"]
        proxy = _gain_z(r, "proxy")
        proxy = proxy if proxy is not None else _gain_z(r, "rm")
        audit = _gain_z(r, "audit")
        if proxy is not None and audit is not None:
            out["divergence"] = proxy - audit
        for name in ("audit", "gold"):
            z = _gain_z(r, name)
            if z is not None:
                self._best_z[name] = max(self._best_z.get(name, z), z)
                out[f"{name}_drop"] = self._best_z[name] - z
        return out

    def observe(self, step: int, result: dict, model=None) -> list[dict]:
        """The signals of one evaluation point, logged; the firings (also logged, and kept)."""
        sig = self.signals(step, result)
        fired = []
        for name, value in sig.items():
            rule: Rule = getattr(self.opt, name)
            if rule.threshold is not None and value > rule.threshold:
                fired.append({"step": step, "monitor": name, "value": value, "threshold": rule.threshold,
                              "action": rule.action})
        self.points.append({"step": step, "kl_per_token": result["kl_per_token"], **{f"monitor/{k}": v
                                                                                      for k, v in sig.items()}})
        if self.tracker is not None:
            self.tracker.log({**{f"monitor/{k}": v for k, v in sig.items()},
                              **{f"monitor/fired/{f['monitor']}": f["value"] for f in fired}}, step)
            if fired:
                self.tracker.table("monitor/firings", fired, step)
        for f in fired:
            (log.error if f["action"] == "stop" else log.warning)(
                "monitor %s fired at step %d: %.4g > threshold %.4g (%s)", f["monitor"], step, f["value"],
                f["threshold"], "training stops" if f["action"] == "stop" else "warning")
            if f["action"] == "stop" and self.stop is None:
                self.stop = f
        self.firings += fired
        self._keep_if_best(step, result, model)
        return fired

    # ---- best checkpoint ------------------------------------------------------------------------
    def best_by(self, result: dict) -> str | None:
        by = self.opt.best_by
        if by == "auto":
            by = "audit" if "audit_policy" in result else "gold"
        return by if f"{by}_policy" in result else None

    def _keep_if_best(self, step: int, result: dict, model) -> None:
        if self.opt.publish != "best" or model is None:
            return
        by = self.best_by(result)
        if by is None:
            return
        score = result[f"{by}_policy"]
        if self.best is None or score > self.best["score"]:
            self.best = {"step": step, "by": by, "score": score, "figures": figures(result)}
            # ZeRO-3: gathered one parameter at a time, kept by rank 0 (rlhf.distributed.copy_params)
            self._best_weights = copy_params([(n, p) for n, p in model.named_parameters() if p.requires_grad])

    def restore_best(self, model, last_step: int, last: dict | None) -> dict | None:
        """Put the best point's trainable weights back into `model` (`publish: best`); returns what
        `artifact.json` records (`extra.published`), or None when nothing is to be published but the last."""
        if self.opt.publish != "best" or self.best is None:
            return None
        record = {"policy": "best", "step": self.best["step"], "best_by": self.best["by"],
                  "why": (f"the highest {self.best['by']} score ({self.best['score']:.4g}) of the "
                          f"{len(self.points)} evaluation points during training"),
                  "best": self.best["figures"], "last_step": last_step, "last": figures(last or {})}
        if self.best["step"] == last_step:
            record["why"] += "; it is the last step"
            return record
        load_params([(n, p) for n, p in model.named_parameters() if p.requires_grad], self._best_weights)
        log.info("publishing the policy of step %d (%s), not the last step %d", self.best["step"], record["why"],
                 last_step)
        return record

    def summary(self) -> dict:
        """For metrics.json (`monitor`) and the W&B summary."""
        return {"firings": self.firings, "fired": sorted({f["monitor"] for f in self.firings}),
                "stopped_at_step": self.stop["step"] if self.stop else None,
                "stopped_by": self.stop["monitor"] if self.stop else None, "points": self.points}


def figures(result: dict) -> dict:
    return {k: result[k] for k in SHOWN if k in result}
