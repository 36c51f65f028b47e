"""ZeRO-3 scale-out: per-rank model + optimizer memory and step time, 2 processes vs 1.

    .venv/bin/python bench/zero3_memory.py                      # default: a 30M-parameter Llama
    .venv/bin/python bench/zero3_memory.py --hidden 512 --layers 8 --steps 6

Runs itself through the real `deepspeed` launcher twice (--num_gpus 1, then 2) on a randomly
initialised Llama-shaped model with the GPT-2 vocabulary (shared assets), under the project's own
conf/deepspeed/zero3.yaml, trained with AdamW on random tokens. Each rank reports:

- model+optimizer bytes: every tensor storage alive after a few optimizer steps that was not alive
  before the model was built (parameter shards, gradient partitions, fp32 master partitions, Adam
  moments, communication buckets), each storage counted once;
- resident memory growth of the process over the same span (psutil), for comparison;
- mean step time (forward, backward, optimizer) after one warm-up step, same micro-batch per rank.

Prints figures; asserts nothing. The goal stated in the issue: per-rank memory with 2 ranks at most
0.6x that of 1 rank. On CPU hosts the processes share the cores, so step time shows the cost of
communication, not a speed-up.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=4, help="micro-batch per rank")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--worlds", default="1,2")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher's
    return p.parse_args(argv)


def _storages() -> dict[int, int]:
    """data_ptr -> bytes of every tensor storage reachable from Python objects."""
    import torch

    out = {}
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.device.type != "meta":
                st = obj.untyped_storage()
                if st.nbytes():
                    out[st.data_ptr()] = st.nbytes()
        except Exception:  # objects that die or refuse inspection mid-walk
            continue
    return out


def _ds_config(world: int, batch: int, hidden: int) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/deepspeed/zero3.yaml"), resolve=True)
    cfg.update(train_micro_batch_size_per_gpu=batch, gradient_accumulation_steps=1,
               train_batch_size=batch * world, gradient_clipping=1.0)
    cfg["bf16"] = {"enabled": False}
    cfg["fp16"] = {"enabled": False}
    cfg["zero_allow_untested_optimizer"] = True
    # the "auto" values, as transformers fills them in from the hidden size
    cfg["zero_optimization"].update(reduce_bucket_size=hidden * hidden,
                                    stage3_prefetch_bucket_size=int(0.9 * hidden * hidden),
                                    stage3_param_persistence_threshold=10 * hidden)
    return cfg


def worker(a) -> None:
    import deepspeed
    import psutil
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo", verbose=False)
    torch.manual_seed(0)
    ds_cfg = _ds_config(world, a.batch, a.hidden)
    vocab = 50257  # the GPT-2 vocabulary of the shared assets' tokenizer
    config = LlamaConfig(vocab_size=vocab, hidden_size=a.hidden, intermediate_size=int(a.hidden * 8 / 3),
                         num_hidden_layers=a.layers, num_attention_heads=max(1, a.hidden // 64),
                         max_position_embeddings=a.seq, tie_word_embeddings=False)
    gc.collect()
    before, rss0 = _storages(), psutil.Process().memory_info().rss
    with deepspeed.zero.Init(config_dict_or_path=ds_cfg):
        model = LlamaForCausalLM(config)
    n_params = sum(p.ds_numel for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=ds_cfg)
    gen = torch.Generator().manual_seed(1 + rank)
    times = []
    for _ in range(a.steps):
        ids = torch.randint(0, vocab, (a.batch, a.seq), generator=gen).to(engine.device)
        t0 = time.perf_counter()
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        times.append(time.perf_counter() - t0)
    gc.collect()
    after = _storages()
    new = sum(b for ptr, b in after.items() if ptr not in before)
    res = {"world": world, "rank": rank, "params": n_params, "model_optimizer_bytes": new,
           "rss_growth_bytes": psutil.Process().memory_info().rss - rss0,
           "step_s": sum(times[1:]) / max(1, len(times) - 1), "loss": float(loss)}
    Path(f"{a.out}.rank{rank}").write_text(json.dumps(res))


def launch(world: int, a, out: str) -> list[dict]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(world), "--master_port", str(port),
           __file__, "--worker", "--out", out, "--hidden", str(a.hidden), "--layers", str(a.layers),
           "--seq", str(a.seq), "--batch", str(a.batch), "--steps", str(a.steps)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"deepspeed --num_gpus {world} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return [json.loads(Path(f"{out}.rank{r}").read_text()) for r in range(world)]


def main(argv=None) -> None:
    a = _args(argv)
    if a.worker:
        return worker(a)
    worlds = [int(w) for w in a.worlds.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in worlds:
            results[w] = launch(w, a, f"{tmp}/w{w}")
    mib = 2**20
    base = results[worlds[0]]
    b_mem = max(r["model_optimizer_bytes"] for r in base)
    b_step = max(r["step_s"] for r in base)
    print(f"ZeRO-3 (conf/deepspeed/zero3.yaml), Llama {a.layers}x{a.hidden}, vocab 50257, "
          f"{base[0]['params'] / 1e6:.1f}M parameters, fp32, AdamW; micro-batch {a.batch}x{a.seq} per rank; "
          f"{os.cpu_count()} CPU cores")
    print(f"{'ranks':>5} {'rank':>4} {'model+optim MiB':>16} {'vs 1 rank':>9} {'RSS growth MiB':>15} "
          f"{'step s':>7} {'vs 1 proc':>9}")
    for w in worlds:
        for r in results[w]:
            print(f"{w:>5} {r['rank']:>4} {r['model_optimizer_bytes'] / mib:>16.1f} "
                  f"{r['model_optimizer_bytes'] / b_mem:>9.2f} {r['rss_growth_bytes'] / mib:>15.1f} "
                  f"{r['step_s']:>7.3f} {r['step_s'] / b_step:>9.2f}")
    if len(worlds) > 1:
        top = results[worlds[-1]]
        ratio = max(r["model_optimizer_bytes"] for r in top) / b_mem
        print(f"per-rank model+optimizer memory, {worlds[-1]} ranks vs {worlds[0]}: {ratio:.2f}x "
              f"(goal <= 0.6x: {'met' if ratio <= 0.6 else 'NOT met'}); step time "
              f"{max(r['step_s'] for r in top) / b_step:.2f}x (each rank's micro-batch unchanged, so "
              f"{worlds[-1]}x the samples per step)")


if __name__ == "__main__":
    main()
