"""One GPU, one command: throughput of our stages on a model of Qwen2.5-0.5B's shape (run by bench/gpu.sh).

    bench/gpu.sh [--dry-run] [--out FILE]        # not this file directly: gpu.sh installs the wheels

Builds a randomly initialised Qwen2 with Qwen2.5-0.5B's shape from its config alone (no download;
the GPT-2 tokenizer of the carried assets drives it: its ids are a subset of the 151,936-token
vocabulary) and runs, each through the real `rlhf` CLI in its own process:

  peak      the measured bf16 matmul rate (8192^3, mean of 10 after 3 warm-ups): the MFU denominator
  attention which attention implementation computes packed (padding-free) rows correctly, best first
  sft       bf16, rows of 2048 tokens: tokens/s and MFU = 6 N tokens/s / peak (N = parameters)
  dpo       bf16, pairs of 2048-token sequences: tokens/s (both sequences) and MFU by the same 6 N
            (the frozen reference's forward pass, 2 N per token more, is not counted)
  batching  SFT on TinyStories rows (max_length 2048): our `grouped` vs TRL's padding-free `packed`,
            real tokens/s, with the attention found above
  ppo       our PPO's rollout tokens/s (batched generation with a KV cache) and training tokens/s
  qlora     a QLoRA SFT smoke run (4-bit NF4 base, LoRA adapters): does it train

and writes one JSON. `--dry-run` runs the same plan on the CPU with a 2-layer model of the same
family, a few steps each (QLoRA too: bitsandbytes has CPU kernels), so everything but the GPU work
is exercised before the GPU is paid for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLOCK = ROOT / "bench" / "clock"
QWEN_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768,
                rope_theta=1_000_000.0, rms_norm_eps=1e-6)
# the dry run: the same family, 2 small layers, the tokenizer's own vocabulary, fp32 (bf16 crawls on a CPU)
TINY = dict(QWEN_05B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=None)


class Plan:
    def __init__(self, dry: bool, work: Path, assets: Path):
        self.dry, self.work, self.assets = dry, work, assets
        self.seq = 128 if dry else 2048
        self.steps = 3 if dry else 30
        self.batch = 2 if dry else 8
        self.warmup = 1 if dry else 5
        self.dtype = "float32" if dry else "bfloat16"
        self.max_rows = 48 if dry else None  # rows of each data file
        self.deadline = time.perf_counter() + (3600 if dry else 480)  # no new step after 8 minutes

    def pick(self, dry, gpu):
        return dry if self.dry else gpu


def build_model(plan: Plan) -> tuple[Path, int]:
    import torch
    from transformers import GPT2TokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = GPT2TokenizerFast.from_pretrained(plan.assets / "tokenizers" / "gpt2")
    tok.add_special_tokens({"pad_token": "<pad>"})
    shape = dict(TINY, vocab_size=len(tok)) if plan.dry else QWEN_05B
    config = Qwen2Config(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(config).to(getattr(torch, plan.dtype))
    path = plan.work / "qwen2.5-0.5b-shape"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, sum(p.numel() for p in model.parameters())


def build_data(plan: Plan, model_dir: Path) -> dict[str, Path]:
    """Long SFT rows and DPO pairs (TinyStories concatenated to the sequence length) and the plain
    TinyStories rows (prompt = first sentence) for the batching comparison."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    stories = [json.loads(line)["text"] for line in open(plan.assets / "data" / "tinystories" / "stories.jsonl")]
    ids = tok("\n\n".join(stories)).input_ids
    n, reply = plan.seq - 8, plan.seq // 8
    chunks = [ids[i:i + n] for i in range(0, len(ids) - n, n)][: plan.max_rows and 2 * plan.max_rows]
    stories = stories[: plan.max_rows and 4 * plan.max_rows]
    out = {"long": plan.work / "long.jsonl", "pairs": plan.work / "pairs.jsonl", "stories": plan.work / "stories.jsonl"}
    with open(out["long"], "w") as f:
        for c in chunks:
            f.write(json.dumps({"text": tok.decode(c)}) + "\n")
    with open(out["pairs"], "w") as f:
        for a, b in zip(chunks[::2], chunks[1::2], strict=False):
            f.write(json.dumps({"prompt": tok.decode(a[: n - reply]), "chosen": tok.decode(a[n - reply:]),
                                "rejected": tok.decode(b[n - reply:])}) + "\n")
    with open(out["stories"], "w") as f:
        for s in stories:
            f.write(json.dumps({"text": s}) + "\n")
    return out


def matmul_peak(plan: Plan) -> float | None:
    """bf16 TFLOP/s of one large matmul on this GPU (None on the CPU)."""
    import torch

    if plan.dry or not torch.cuda.is_available():
        return None
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * 10 / (time.perf_counter() - t0) / 1e12


def best_attention(model_dir: Path, dry: bool) -> dict:
    """The first implementation whose padding-free (packed, position_ids) forward equals the padded one
    (a dry run on the CPU tries sdpa alone: flex attention compiles there for minutes)."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    candidates = [c for c, mod in (("flash_attention_3", "flash_attn_interface"), ("flash_attention_2", "flash_attn"))
                  if importlib.util.find_spec(mod)] + ["flex_attention", "sdpa"]
    if dry:
        candidates = ["sdpa"]
    lengths = [5, 9]
    tried = {}
    for impl in candidates:
        try:
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=impl).to(device)
            ids = [torch.randint(0, 1000, (n,), device=device) for n in lengths]
            with torch.no_grad():  # no cache: as in training, where packed rows are recognised
                separate = torch.cat([model(input_ids=x[None], use_cache=False).logits[0] for x in ids])
                pos = torch.cat([torch.arange(n, device=device) for n in lengths])[None]
                packed = model(input_ids=torch.cat(ids)[None], position_ids=pos, use_cache=False).logits[0]
            err = ((packed - separate).abs().max() / separate.abs().max()).item()
            tried[impl] = err
            if err < 0.05:  # rows attending to each other move the logits by far more than bf16 rounding
                return {"attn_implementation": impl, "max_abs_logit_diff": tried}
        except Exception as e:  # not installed, not supported here
            tried[impl] = f"{type(e).__name__}: {str(e)[:200]}"
    return {"attn_implementation": None, "max_abs_logit_diff": tried}


def cli(plan: Plan, name: str, *overrides: str, timeout: int | None = None) -> dict:
    """`python -m rlhf <overrides>` in its own process with the step clock; its artifact metrics and clock."""
    out = plan.work / name
    env = dict(os.environ, RLHF_BENCH_CLOCK=str(out) + ".clock.json", WANDB_MODE="disabled", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(CLOCK), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "rlhf", *overrides, "logger=none", f"run_dir={out}"]
    t0 = time.perf_counter()
    if timeout is None:  # a step may not run past the end of the call (the deadline + 60 s of margin)
        timeout = max(60, int(plan.deadline + 60 - t0)) if not plan.dry else 1800
    # not from the checkout's root: there `rlhf` would resolve to ./rlhf, which lacks rlhf.data/rlhf.reward
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=plan.work)
    got = {"command": " ".join(cmd[2:]), "wall_s": round(time.perf_counter() - t0, 1), "exit": res.returncode}
    if res.returncode:
        got["error"] = (res.stdout + res.stderr)[-3000:]
        return got
    metrics = out / "metrics.json"
    got["metrics"] = json.loads(metrics.read_text()) if metrics.is_file() else None
    clock = Path(str(out) + ".clock.json")
    got["clock"] = json.loads(clock.read_text()) if clock.is_file() else None
    return got


def steady_step_s(got: dict, warmup: int) -> float | None:
    """Mean wall seconds per optimizer step after `warmup` steps, from the step clock."""
    trainers = (got.get("clock") or {}).get("trainers") or []
    if not trainers:
        return None
    steps = max(trainers, key=lambda t: len(t["steps"]))["steps"]
    walls = [b[2] - a[2] for a, b in zip(steps, steps[1:], strict=False)][warmup:]
    return sum(walls) / len(walls) if walls else None


def model_args(plan: Plan, model_dir: Path, attn: str | None, seq: int | None = None) -> list[str]:
    return [f"model.name_or_path={model_dir}", f"model.dtype={plan.dtype}", "model.add_bos=false",
            f"model.max_length={seq or plan.seq}", f"model.attn_implementation={attn or 'sdpa'}"]


def train_args(plan: Plan, batch: int | None = None) -> list[str]:
    bf16 = [] if plan.dry else ["trainer.bf16=true"]
    return [f"trainer.max_steps={plan.steps}", f"trainer.per_device_train_batch_size={batch or plan.batch}",
            "trainer.save_strategy=no", "trainer.eval_strategy=no", "trainer.logging_steps=5", *bf16]


def throughput(got: dict, plan: Plan, tokens_per_step: float, n_params: int, peak: float | None) -> dict:
    step = steady_step_s(got, plan.warmup)
    if step is None:
        return got
    tps = tokens_per_step / step
    got.update(step_s=step, tokens_per_s=tps,
               mfu=None if peak is None else 6 * n_params * tps / (peak * 1e12))
    got.pop("clock", None)
    return got


def run_plan(plan: Plan, result: dict) -> None:
    """Every step, in order; a failed step is recorded and the next one still runs."""
    import torch

    def step(name, fn):
        if time.perf_counter() > plan.deadline:
            result[name] = {"skipped": "time budget of the 10-minute call spent"}
            return
        t0 = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as e:
            result[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
        print(f"[gpu.py] {name}: {time.perf_counter() - t0:.0f} s", flush=True)
        (plan.work / "partial.json").write_text(json.dumps(result, indent=2, default=str))

    result["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    model_dir, n_params = build_model(plan)
    result["model"] = {"shape": "Qwen2.5-0.5B" if not plan.dry else "2-layer Qwen2 (dry run)", "params": n_params,
                       "dtype": plan.dtype, "seq": plan.seq}
    data = build_data(plan, model_dir)
    step("peak", lambda: {"bf16_matmul_tflops": matmul_peak(plan)})
    peak = (result.get("peak") or {}).get("bf16_matmul_tflops")
    step("attention", lambda: best_attention(model_dir, plan.dry))
    attn = (result.get("attention") or {}).get("attn_implementation")
    long = ["data=jsonl", "data.kind=sft", f"data.source={data['long']}", "data.eval_rows=4", "stage.eval_before=false"]
    step("sft", lambda: throughput(cli(plan, "sft", "stage=sft", *model_args(plan, model_dir, attn), *long,
                                       "stage.batching=grouped", *train_args(plan)),
                                   plan, plan.batch * (plan.seq - 7), n_params, peak))
    dpo_batch = max(1, plan.batch // 2)
    step("dpo", lambda: throughput(cli(plan, "dpo", "stage=dpo", *model_args(plan, model_dir, attn), "data=jsonl",
                                       "data.kind=pair", f"data.source={data['pairs']}", "data.eval_rows=4",
                                       "evaluation.enabled=false", *train_args(plan, dpo_batch)),
                                   plan, dpo_batch * 2 * (plan.seq - 7), n_params, peak))
    stories = ["data=jsonl", "data.kind=sft", "data.format=tinystories", f"data.source={data['stories']}",
               "data.eval_rows=4", "stage.eval_before=false"]
    def batching(b, impl):
        return lambda: _tokens(cli(plan, f"batching-{b}-{impl}", "stage=sft", *model_args(plan, model_dir, impl),
                                   *stories, f"stage.batching={b}", *train_args(plan, plan.pick(4, 32))))

    step("batching_grouped", batching("grouped", attn))
    step(f"batching_packed_{attn or 'sdpa'}", batching("packed", attn or "sdpa"))
    step("ppo", lambda: _ppo(cli(plan, "ppo", "stage=ppo", *model_args(plan, model_dir, attn, plan.pick(128, 1024)),
                                 "data=tinystories", "data.max_rows=400", "stage.judge=length",
                                 "stage.value_from=policy", "evaluation.enabled=false",
                                 f"trainer.total_iterations={plan.pick(1, 3)}",
                                 f"trainer.rollout_batch_size={plan.pick(8, 128)}",
                                 f"trainer.mini_batch_size={plan.pick(4, 32)}",
                                 f"trainer.max_new_tokens={plan.pick(16, 256)}", "trainer.save_every=0")))
    # bitsandbytes runs NF4 on the CPU too (rlhf.quantization): the dry run trains it as well
    step("qlora", lambda: _summary(cli(plan, "qlora", "stage=sft", "peft=qlora", "debug=smoke",
                                       *model_args(plan, model_dir, attn, 512), *stories)))
    if attn not in (None, "sdpa"):  # last: the same packing with sdpa (correct too, but quadratic per packed row)
        step("batching_packed_sdpa", batching("packed", "sdpa"))


def _summary(got: dict) -> dict:
    got.pop("clock", None)
    m = got.get("metrics") or {}
    got["metrics"] = {k: m.get(k) for k in ("params_total", "params_trainable", "train_loss", "eval_loss",
                                           "train_runtime_s", "train_tokens_per_s") if k in m}
    return got


def _tokens(got: dict) -> dict:
    """Real (non-pad) training tokens per second as the SFT stage reports it (TRL's num_tokens)."""
    got = _summary(got)
    got["real_tokens_per_s"] = got["metrics"].get("train_tokens_per_s")
    return got


def _ppo(got: dict) -> dict:
    m = got.pop("metrics", None) or {}
    got.pop("clock", None)
    got.update({k: m.get(k) for k in ("rollout_tokens_per_s", "train_tokens_per_s", "iterations",
                                      "rollouts_per_iteration", "params_total")})
    return got


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="the whole plan on the CPU at toy size")
    ap.add_argument("--out", type=Path, required=True, help="the JSON to write")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (model, data, runs)")
    ap.add_argument("--assets", type=Path, default=Path(os.environ.get("RLHF_ASSETS_DIR", ROOT.parent / "shared/assets")))
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    plan = Plan(a.dry_run, a.work, a.assets)
    import torch

    if not a.dry_run and not torch.cuda.is_available():
        print("gpu.py: no CUDA device visible (use --dry-run on a CPU machine)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    result: dict = {"dry_run": a.dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        run_plan(plan, result)
    finally:
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2, default=str))
        print(f"[gpu.py] wrote {a.out} ({result['wall_s']} s)")
    failed = [k for k, v in result.items() if isinstance(v, dict) and (v.get("error") or v.get("exit"))]
    if failed:
        print(f"[gpu.py] failed steps: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
