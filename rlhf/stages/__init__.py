"""One short adapter per stage. Each stage module holds, beside its `run(cfg, run_dir)`:

- `Options`: the schema of its `stage:` node (checked by `rlhf.config.validate` before anything runs),
- `DATA_KINDS`: the row kinds it trains on, `TRAINER`: its trainer config class (or None),
- optionally `problems(cfg) -> list[str]`: its own cross-field rules.

Stage name -> module: a plain dict, no registry. `rlhf.runner.run_stage` dispatches.
"""

STAGES = {
    "sft": "rlhf.stages.sft",
    "reward": "rlhf.stages.reward",
    "dpo": "rlhf.stages.dpo",
    "kto": "rlhf.stages.kto",
    "simpo": "rlhf.stages.ref_free",
    "orpo": "rlhf.stages.ref_free",
    "ppo": "rlhf.stages.ppo",
    "grpo": "rlhf.stages.critic_free",
    "rloo": "rlhf.stages.critic_free",
    "generate": "rlhf.stages.generate",
    "eval": "rlhf.stages.eval",
}
