"""What the drift monitors cost: the wall time of one evaluation point during PPO (policy and
reference samples, KL and entropy passes, gold / proxy / audit scoring, the monitors) against one
PPO iteration (rollout + optimisation), on the embedded demo model.

    RLHF_ASSETS_DIR=/work/shared/assets python bench/monitor_cost.py [--iterations 8] [--every 2]
        [--rollouts 32] [--prompts 16] [--tokens 32]

Trains a smoke SFT model under /tmp, then one PPO run with `evaluation.every_steps` and an audit
scorer, and prints seconds per evaluation point, seconds per iteration, and the share monitoring adds
to an iteration it runs after. The monitors themselves (rlhf.monitor.Monitor.observe) are arithmetic
on the point's figures; what costs is the evaluation point they read.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--rollouts", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    a = ap.parse_args()

    from hydra import compose, initialize_config_module

    from rlhf.cli import register_resolvers
    from rlhf.resources import CONFIG_MODULE
    from rlhf.runner import run_stage

    register_resolvers()
    root = Path(tempfile.mkdtemp(prefix="monitor_cost_"))
    os.environ["RLHF_RUNS_DIR"] = str(root / "runs")
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        run_stage(compose("config", ["logger=none", "debug=smoke", "trainer.save_strategy=no"]), root / "sft")
        art = run_stage(compose("config", [
            "stage=ppo", "logger=none", f"model.init_from={root / 'sft'}", "stage.judge=vader", "stage.value_from=policy",
            "data.max_rows=256", f"trainer.total_iterations={a.iterations}", f"trainer.rollout_batch_size={a.rollouts}",
            "trainer.mini_batch_size=8", f"trainer.max_new_tokens={a.tokens}", "trainer.save_every=0",
            f"evaluation.every_steps={a.every}", f"evaluation.max_prompts={a.prompts}",
            f"evaluation.curve_prompts={a.prompts}", f"evaluation.generation.max_new_tokens={a.tokens}",
            "evaluation.judge=vader", "evaluation.audit_reward_models=[rlhf.judges.length]"]), root / "ppo")
    history = json.loads((root / "ppo" / "ppo_history.json").read_text())
    per_iter = sum(h["time/iteration_s"] for h in history) / len(history)
    points = len(art.metrics["policy_eval_curve"])
    per_point = art.metrics["policy_eval_curve_seconds"] / points
    print(f"PPO: {len(history)} iterations of {a.rollouts} rollouts x {a.tokens} tokens; {points} evaluation points "
          f"of {a.prompts} prompts x 2 samples x {a.tokens} tokens, each side")
    print(f"  one iteration (rollout + optimisation): {per_iter:.2f} s")
    print(f"  one evaluation point (+ monitors):      {per_point:.2f} s = {per_point / per_iter:.0%} of an iteration; "
          f"every {a.every} iterations: +{per_point / (a.every * per_iter):.0%} wall time")


if __name__ == "__main__":
    main()
