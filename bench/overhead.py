"""P1: what the framework costs per optimizer step and at start-up, and how that scales.

Ours is the real `rlhf stage=<sft|reward|dpo>` CLI; the peer a plain TRL script (bench/peers/) with
the same model, rows, batch, max_length, steps, schedule and seed. Both get the rows of our data
layer written to one canonical .jsonl (bench/prep.py), only rows that fit max_length (so neither
side truncates or drops), no evaluation, no checkpoints; ours with `stage.batching=padded`, TRL's
default, so the batches are the same. Per step = median CPU per optimizer step after the first;
fixed = whole-process CPU minus the steps (start-up, data, model, save: a 1-step run minus one step).
"""

from __future__ import annotations

import prep
from harness import Context, Row, peer, ratio_rows, same_batches, side_by_side
from harness import ours as rlhf

# stage -> (data preset, ours' stage overrides, peer script, learning rate as in conf/trainer/)
STAGES = {
    "sft": ("tinystories", ["stage=sft", "stage.batching=padded"], "sft"),
    "reward": ("hh_rlhf", ["stage=reward"], "reward"),
    "dpo": ("hh_rlhf", ["stage=dpo", "evaluation.enabled=false"], "dpo"),
}
KIND = {"tinystories": "sft", "hh_rlhf": "pair"}
# model -> (max_length, batch per stage, steps) for --quick, then for the full suite
MODELS = {
    "stories260k": ((256, {"sft": 8, "reward": 4, "dpo": 4}, 6), (512, {"sft": 16, "reward": 8, "dpo": 8}, 20)),
    "llama20m": ((128, {"sft": 2, "reward": 2, "dpo": 1}, 5), (256, {"sft": 4, "reward": 4, "dpo": 2}, 12)),
}


def step_pairs(ctx: Context, stage: str, model: str, max_length: int, batch: int, steps: int, n: int, tag: str = ""):
    """n A/B pairs of one stage on one model; returns [(ours Run, peer Run)]."""
    data, stage_overrides, script = STAGES[stage]
    kind = KIND[data]
    train = prep.data_file(model, data, max_length, stage, only_fitting=kind == "pair")

    def ours_cmd(out):
        return rlhf(*stage_overrides, *prep.model_overrides(model, max_length), "data=jsonl", f"data.kind={kind}",
                    f"data.source={train}", "data.eval_fraction=0", f"trainer.max_steps={steps}",
                    f"trainer.per_device_train_batch_size={batch}", "trainer.save_strategy=no", f"run_dir={out}")

    def peer_cmd(out):
        return peer(script, model=prep.model_dir(model), train=train, out=out, steps=steps, batch=batch,
                    max_length=max_length, add_bos=model == "stories260k")

    return side_by_side(ctx, f"p1-{stage}-{model}{tag}", ours_cmd, peer_cmd, n)


def p1_overhead(ctx: Context) -> list[Row]:
    rows = []
    for model, settings in MODELS.items():
        max_length, batches, steps = ctx.pick(*settings)
        n = ctx.reps(2 if model == "stories260k" else 1, 3)
        for stage in STAGES:
            res = step_pairs(ctx, stage, model, max_length, batches[stage], steps, n)
            what = f"{stage}, {model}, batch {batches[stage]}x{max_length}"
            rows.append(ratio_rows("P1", f"CPU per step, {what}", "s",
                                   [(o.step_cpu(), p.step_cpu()) for o, p in res], goal="<= 1.03",
                                   note=same_batches(res)))
            rows.append(ratio_rows("P1", f"fixed start-up CPU, {stage}, {model}", "s",
                                   [(o.fixed_cpu(), p.fixed_cpu()) for o, p in res]))
    return rows


# Scaling: SFT per step as the model and the length grow (batch 4, the same rows for both sides).
SIZES = ("llama1m", "llama5m", "llama20m", "llama50m")
LENGTHS = (128, 256, 512)


def scaling(ctx: Context) -> list[Row]:
    grid = [(m, 128) for m in SIZES] + [("llama5m", n) for n in LENGTHS if n != 128]
    if ctx.quick:
        grid = [("llama1m", 128), ("llama50m", 128)]
    rows = []
    for model, length in grid:
        res = step_pairs(ctx, "sft", model, length, 4, ctx.pick(4, 8), ctx.reps(1, 2), tag=f"-len{length}")
        rows.append(ratio_rows("scaling", f"SFT CPU per step, {model} ({prep.params(model) / 1e6:.1f}M), "
                               f"batch 4x{length}", "s", [(o.step_cpu(), p.step_cpu()) for o, p in res],
                               goal="<= 1.03", note=same_batches(res)))
    return rows
