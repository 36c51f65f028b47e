"""P2: what our defaults buy, at equal held-out loss.

SFT: ours with its default `stage.batching=grouped` (length-grouped batches in random order,
rlhf/stages/batching.py) against plain TRL on the same rows and held-out split: TRL's default (random
batches, padded), TRL's best-fit-decreasing packing, and transformers' length-grouped sampler
(`group_by_length`, our default before: longest-first within each megabatch). Every side evaluates
the held-out loss at the same steps with evaluation batch 1 (so batching cannot change how the loss
is averaged); the step clock gives the training CPU up to each evaluation. Reported: real tokens per
training CPU-second, held-out loss after the last step, and the training CPU each needs to reach the
same held-out loss (the worst of the final losses, interpolated between evaluations) -- the
speed-up at equal loss.

DPO: ours with `trainer.precompute_ref_log_probs=true` vs our default (false), one epoch each:
per-step and whole-run CPU, held-out DPO loss of both.
"""

from __future__ import annotations

import prep
from harness import Context, Row, Run, peer, ratio_rows, run, side_by_side
from harness import ours as rlhf


def loss_curve(run: Run, start_loss: float) -> list[tuple[float, float]]:
    """[(training CPU s, held-out loss)] from the step clock's evaluations, (0, start_loss) first."""
    t = run.trainer
    steps = dict(zip([s for s, *_ in t["steps"]], run.step_cpus(), strict=True))
    curve = [(0.0, start_loss)]
    for e in t["evals"]:
        loss = next((v for k, v in e["metrics"].items() if k.endswith("_loss") and "before" not in k), None)
        if e["step"] > 0 and loss is not None:
            curve.append((sum(c for s, c in steps.items() if s <= e["step"]), loss))
    return curve


def cpu_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """Training CPU at which the held-out loss first reaches `target` (linear between evaluations)."""
    for (c0, l0), (c1, l1) in zip(curve, curve[1:], strict=False):
        if l1 <= target:
            return c1 if l0 == l1 else c0 + (c1 - c0) * (l0 - target) / (l0 - l1)
    return None


def real_tokens(run: Run) -> float:
    ev = [e for e in run.trainer["evals"] if e["metrics"].get("eval_num_tokens")]
    return ev[-1]["metrics"]["eval_num_tokens"] if ev else float("nan")


PEERS = ("padded", "packed", "group_by_length")


def sft_batching(ctx: Context, peers: tuple[str, ...] = PEERS) -> list[Row]:
    model, max_length, batch = "stories260k", ctx.pick(256, 512), ctx.pick(8, 16)
    # Full: the held-out loss falls below its start within 60 steps of batch 16 x 512 (measured: 1.493,
    # 1.473, 1.461 at steps 20/40/60). Quick: 20 steps of 8 x 256 at lr 5e-4 leave it above the start
    # (it rises first), so the equal-loss speed-up needs the full run.
    steps, n_eval = ctx.pick(20, 60), ctx.pick(48, 64)
    every = steps // ctx.pick(2, 4)
    train = prep.data_file(model, "tinystories", max_length, "sft", eval_rows=n_eval)
    held_out = prep.data_file(model, "tinystories", max_length, "sft", split="eval", eval_rows=n_eval)

    def ours_cmd(out):
        return rlhf("stage=sft", *prep.model_overrides(model, max_length), f"data.eval_rows={n_eval}",
                    f"trainer.max_steps={steps}", f"trainer.per_device_train_batch_size={batch}",
                    f"trainer.eval_steps={every}", "trainer.per_device_eval_batch_size=1",
                    "trainer.save_strategy=no", f"run_dir={out}")

    def peer_cmd(batching):
        return lambda out: peer("sft", model=prep.model_dir(model), train=train, eval=held_out, out=out,
                                steps=steps, batch=batch, max_length=max_length, eval_batch=1, eval_steps=every,
                                batching=batching, add_bos=True)

    # One ours run per repetition, compared with each peer of that repetition; the order alternates.
    variants = {"ours": ours_cmd, **{b: peer_cmd(b) for b in peers}}
    done: dict[str, list[Run]] = {k: [] for k in variants}
    for i in range(ctx.reps(1, 1)):  # packing costs ~6x per step on a CPU: one repetition
        for k in (list(variants) if i % 2 == 0 else list(reversed(variants))):
            out = ctx.out / f"p2-sft-{k}" / f"run-{i}"
            done[k].append(run(variants[k](out), out))
    runs = {b: list(zip(done["ours"], done[b], strict=True)) for b in variants if b != "ours"}
    rows = []
    for batching, res in runs.items():
        what = {"padded": "TRL default (padded)", "packed": "TRL bfd packing",
                "group_by_length": "transformers group_by_length"}[batching]
        tps = [(real_tokens(o) / o.train_cpu(), real_tokens(p) / p.train_cpu()) for o, p in res]
        rows.append(ratio_rows("P2", f"SFT real tokens per training CPU-s, ours grouped vs {what}", "tok/s", tps,
                               note="higher is better"))
        start = [e for e in res[0][0].trainer["evals"] if e["step"] == 0][0]["metrics"]["eval_before_loss"]
        finals = [(loss_curve(o, start)[-1][1], loss_curve(p, start)[-1][1]) for o, p in res]
        rows.append(ratio_rows("P2", f"SFT held-out loss after {steps} steps (from {start:.4f}), ours vs {what}",
                               "nats", finals, note="lower is better"))
        if batching == "group_by_length":
            continue
        speed = []
        for o, p in res:
            target = max(loss_curve(o, start)[-1][1], loss_curve(p, start)[-1][1])
            co, cp = cpu_to_reach(loss_curve(o, start), target), cpu_to_reach(loss_curve(p, start), target)
            if target < start and co and cp:
                speed.append(cp / co)  # peer CPU / ours CPU = our speed-up
        rows.append(Row("P2", f"SFT speed-up at equal held-out loss (training CPU to the worse final loss), "
                        f"{what} / ours grouped", "", None, None, speed, ">= 1.5",
                        "higher is better" if speed else "loss did not fall below its start: more steps needed"))
    return rows


def dpo_precompute(ctx: Context) -> list[Row]:
    model, max_rows, batch = "stories260k", ctx.pick(72, 400), ctx.pick(4, 8)

    def side(precompute):
        return lambda out: rlhf("stage=dpo", *prep.model_overrides(model, 512), f"data.max_rows={max_rows}",
                                f"trainer.per_device_train_batch_size={batch}", "trainer.eval_strategy=no",
                                f"trainer.precompute_ref_log_probs={str(precompute).lower()}",
                                "evaluation.enabled=false", "trainer.save_strategy=no", f"run_dir={out}")

    res = side_by_side(ctx, "p2-dpo-precompute", side(True), side(False), ctx.reps(1, 2))
    loss = [(o.json("metrics.json")["eval_loss"], p.json("metrics.json")["eval_loss"]) for o, p in res]
    return [
        ratio_rows("P2", f"DPO one epoch ({max_rows} rows, batch {batch}): CPU per step, precomputed reference "
                   "vs default (reference in memory)", "s", [(o.step_cpu(), p.step_cpu()) for o, p in res]),
        ratio_rows("P2", "DPO whole run CPU, precomputed reference vs default", "s", [(o.cpu, p.cpu) for o, p in res],
                   goal="<= 0.667", note="speed-up >= 1.5 is <= 0.667"),
        ratio_rows("P2", "DPO held-out loss, precomputed reference vs default", "nats", loss,
                   note="equal within 2% expected"),
    ]


def p2_defaults(ctx: Context) -> list[Row]:
    return sft_batching(ctx) + dpo_precompute(ctx)
