"""PPO rollout throughput: our batched, KV-cached rollout vs a naive one-sequence-at-a-time loop.

    python bench/ppo_rollout.py [--model <dir or run dir>] [--prompts 64] [--new-tokens 48] [--repeats 3]

Both sample the same number of responses from the same prompts with the same settings (sampling at
temperature 1, stop at EOS, `max_new_tokens`); tokens/s counts generated tokens up to and including
EOS. The default model is the demo's SFT policy (runs/demo/pipeline/sft) when it exists, else the
embedded stories260k.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    assets = Path(os.environ.get("RLHF_ASSETS_DIR", ROOT.parent / "shared" / "assets"))
    demo_sft = Path(os.environ.get("RLHF_RUNS_DIR", ROOT / "runs")) / "demo" / "pipeline" / "sft" / "model"
    ap.add_argument("--model", default=str(demo_sft if demo_sft.is_dir() else assets / "models" / "stories260k"))
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.data import DataConfig, load_splits
    from rlhf.ppo.rollout import rollout

    tok = AutoTokenizer.from_pretrained(a.model)
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(a.model).eval()
    rows = load_splits(DataConfig.from_mapping({"kind": "sft", "format": "tinystories", "max_rows": 4 * a.prompts,
                                                "source": str(assets / "data/tinystories/stories.jsonl")})).train
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))[: a.prompts]
    print(f"model {a.model}, {len(prompts)} prompts, max_new_tokens {a.new_tokens}, torch threads "
          f"{torch.get_num_threads()}")

    def batched(seed):
        ro = rollout(model, tok, prompts, max_new_tokens=a.new_tokens, seed=seed)
        return int(ro.response_mask.sum())

    @torch.no_grad()
    def naive(seed):
        torch.manual_seed(seed)
        n = 0
        for p in prompts:
            enc = tok(p, return_tensors="pt")
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=None, max_new_tokens=a.new_tokens,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            resp = out[0, enc.input_ids.shape[1]:].tolist()
            n += resp.index(tok.eos_token_id) + 1 if tok.eos_token_id in resp else len(resp)
        return n

    def measure(fn):
        rates = []
        for r in range(a.repeats):
            t0 = time.perf_counter()
            n = fn(r)
            rates.append(n / (time.perf_counter() - t0))
        return statistics.median(rates), n

    batched(0)  # warm-up
    b, nb = measure(batched)
    s, ns = measure(naive)
    print(f"{'mode':<36}{'tokens/s':>10}{'tokens/iter':>13}")
    print(f"{'batched + KV cache (rlhf.ppo)':<36}{b:>10.0f}{nb:>13}")
    print(f"{'one sequence at a time (generate)':<36}{s:>10.0f}{ns:>13}")
    print(f"speed-up: {b / s:.1f}x")


if __name__ == "__main__":
    main()
