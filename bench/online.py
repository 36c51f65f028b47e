"""P5: our PPO -- where its time goes, its rollout speed, and its cost per completion vs GRPO.

- Time shares of `rlhf stage=ppo` (stories260k policy, the `length` reward function, value model
  from the policy): rollout (generation), scoring, the rest of making experience (policy,
  reference and value forward passes, GAE) and optimisation (PPO epochs over policy and value), from
  the step clock's phase timers.
- Rollout tokens/s of our batched, KV-cached `rlhf.ppo.rollout` vs a one-sequence-at-a-time
  `generate` loop, same prompts, sampling and max_new_tokens (`python bench/online.py rollout`).
- CPU per completion, PPO vs `rlhf stage=grpo` (TRL's GRPOTrainer) at the same completions (the
  same prompts x samples, max tokens and reward); PPO makes 4 optimisation passes and trains a
  critic, GRPO (num_iterations 1) one pass and no critic, so the per-pass figure is also shown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from harness import ASSETS, Context, Row, Run, ratio_rows, side_by_side, value_row
from harness import ours as rlhf
from harness import run as run_side

PPO_EPOCHS = 4


def ppo_cmd(iters, batch, tokens):
    return lambda out: rlhf("stage=ppo", "stage.judge=length", "stage.value_from=policy", "evaluation.enabled=false",
                            "data.max_rows=200", f"trainer.total_iterations={iters}",
                            f"trainer.rollout_batch_size={batch}", f"trainer.mini_batch_size={batch // 2}",
                            f"trainer.ppo_epochs={PPO_EPOCHS}", f"trainer.max_new_tokens={tokens}",
                            "trainer.save_every=0", f"run_dir={out}")


def grpo_cmd(iters, batch, tokens):
    return lambda out: rlhf("stage=grpo", "stage.reward_funcs=[length]", "evaluation.enabled=false",
                            "data.max_rows=200", f"trainer.max_steps={iters}",
                            f"trainer.per_device_train_batch_size={batch}", "trainer.num_generations=4",
                            f"trainer.max_completion_length={tokens}", "trainer.save_strategy=no",
                            f"run_dir={out}")


def ppo_cpu(run: Run) -> float:
    ph = run.clock["phases"]
    return ph["make_experience"][0] + ph["optimise"][0]


def p5_online(ctx: Context) -> list[Row]:
    iters, batch, tokens = ctx.pick(2, 6), ctx.pick(16, 32), ctx.pick(24, 48)
    res = side_by_side(ctx, "p5-ppo-vs-grpo", ppo_cmd(iters, batch, tokens), grpo_cmd(iters, batch, tokens),
                       ctx.reps(1, 2))
    completions = iters * batch
    per = [(ppo_cpu(o) / completions, p.train_cpu() / completions) for o, p in res]
    rows = []
    ph = [o.clock["phases"] for o, _ in res]
    total = [ppo_cpu(o) for o, _ in res]
    for name, share in (
        ("rollout (generation)", [p["rollout"][0] / t for p, t in zip(ph, total, strict=True)]),
        ("scoring (reward function)", [p["scoring"][0] / t for p, t in zip(ph, total, strict=True)]),
        ("experience forward passes (policy, reference, value) + GAE",
         [(p["make_experience"][0] - p["rollout"][0] - p["scoring"][0]) / t for p, t in zip(ph, total, strict=True)]),
        (f"optimisation ({PPO_EPOCHS} PPO epochs, policy + value)", [p["optimise"][0] / t for p, t in zip(ph, total, strict=True)]),
    ):
        rows.append(value_row("P5", f"PPO share of training CPU: {name}", "%", [100 * x for x in share]))
    rows.append(ratio_rows("P5", f"CPU per completion, PPO vs GRPO ({completions} completions of <= {tokens} tokens, "
                           "stories260k)", "s", per, note="lower is better"))
    rows.append(Row("P5", f"... per completion per optimisation pass (PPO {PPO_EPOCHS} passes + critic, GRPO 1)", "",
                    None, None, [o / p / PPO_EPOCHS for o, p in per]))
    rows += rollout_rows(ctx)
    return rows


def rollout_rows(ctx: Context) -> list[Row]:
    prompts, tokens = ctx.pick(16, 64), ctx.pick(24, 48)
    got = []
    for i in range(ctx.reps(1, 3)):
        out = ctx.out / "p5-rollout" / f"run-{i}"
        run_side([sys.executable, __file__, "rollout", "--prompts", str(prompts), "--new-tokens", str(tokens),
                  "--out", str(out / "rollout.json")], out, clock=False)
        got.append(json.loads((out / "rollout.json").read_text()))
    return [ratio_rows("P5", f"rollout tokens/s, batched + KV cache (rlhf.sampling.generate) vs one sequence at a time "
                       f"({prompts} prompts, <= {tokens} new tokens, stories260k)", "tok/s",
                       [(g["batched"], g["one_at_a_time"]) for g in got], note="higher is better")]


def rollout_main(argv) -> None:
    """Both rollouts in one process (1 thread), each timed over the same prompts; writes JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.data import DataConfig, load_splits
    from rlhf.sampling import generate

    model_dir = ASSETS / "models" / "stories260k"
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.unk_token
    tok.add_bos_token = True
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    rows = load_splits(DataConfig.from_mapping({"kind": "sft", "format": "tinystories", "max_rows": 4 * a.prompts,
                                                "source": str(ASSETS / "data/tinystories/stories.jsonl")})).train
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))[: a.prompts]
    prompt_ids = [tok(p).input_ids for p in prompts]

    def batched(seed):  # what our PPO's make_experience calls
        return int(generate(model, prompt_ids, pad_id=tok.pad_token_id, stop_ids=[tok.eos_token_id],
                            max_new_tokens=a.new_tokens, seed=seed).response_mask.sum())

    @torch.no_grad()
    def one_at_a_time(seed):
        torch.manual_seed(seed)
        n = 0
        for p in prompts:
            enc = tok(p, return_tensors="pt")
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=None, max_new_tokens=a.new_tokens,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            resp = out[0, enc.input_ids.shape[1]:].tolist()
            n += resp.index(tok.eos_token_id) + 1 if tok.eos_token_id in resp else len(resp)
        return n

    def rate(fn):
        rates = []
        for r in range(a.repeats):
            c0 = time.process_time()
            n = fn(r)
            rates.append(n / (time.process_time() - c0))
        return statistics.median(rates)

    batched(0)  # warm-up
    result = {"batched": rate(batched), "one_at_a_time": rate(one_at_a_time), "prompts": len(prompts),
              "threads": torch.get_num_threads(), "unit": "generated tokens per CPU-second"}
    with open(a.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__" and sys.argv[1:2] == ["rollout"]:
    rollout_main(sys.argv[2:])
