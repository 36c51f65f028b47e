"""P8: the generation engines side by side -- vLLM (colocated, rlhf.engines) vs HF generate.

- Rollout tokens/s, vLLM / HF, same model (random-init Llama, head dim 64: vLLM's CPU attention
  refuses stories260k's 8), same prompts (TinyStories openings, GPT-2 tokenizer), same sampling
  settings, in alternating pairs inside one process (the engine starts once: 20-50 s on CPU).
- Seconds per PPO iteration (rollout + experience passes + optimisation) with each backend, in
  alternating pairs; with vLLM it includes the weight sync after every iteration and the TIS weights.

Runs in .venv-vllm (`make vllm-env`; vLLM's CPU build); without it the rows say so. On CPU expect
parity (the speed case is a GPU's): the row is there so a regression in our own overhead around
the engine (weight sync, batching, log-prob recomputation) shows. Wall seconds: vLLM's CPU backend
runs its own threads, so process CPU time would not compare like with like.

    .venv-vllm/bin/python bench/generation.py engines --out x.json [--prompts 32 --new-tokens 48 --pairs 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from harness import ASSETS, ROOT, Context, Row, ratio_rows
from harness import run as run_side

VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
MODEL = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=4, max_position_embeddings=512)  # head dim 64, ~29 M parameters (GPT-2 vocabulary)


def p8_generation(ctx: Context) -> list[Row]:
    prompts, tokens, pairs = ctx.pick(16, 64), ctx.pick(32, 64), ctx.reps(2, 5)
    what = f"{prompts} prompts, <= {tokens} new tokens, random-init Llama head dim 64"
    if not VLLM_PY.is_file():
        return [Row("P8", f"rollout tokens/s, vLLM vs HF generate ({what})", note="not run: no .venv-vllm "
                    "(make vllm-env)")]
    out = ctx.out / "p8-generation"
    run_side([VLLM_PY, __file__, "engines", "--prompts", str(prompts), "--new-tokens", str(tokens), "--pairs",
              str(pairs), "--out", str(out / "p8.json")], out, timeout=3600, clock=False)
    got = json.loads((out / "p8.json").read_text())
    return [ratio_rows("P8", f"rollout tokens/s, vLLM vs HF generate ({what})", "tok/s",
                       [(p["vllm"], p["hf"]) for p in got["rollout"]],
                       note=f"higher is better; CPU: parity expected; engine start {got['engine_start_s']:.0f} s"),
            ratio_rows("P8", f"seconds per PPO iteration, vLLM vs HF rollouts ({got['ppo_batch']} rollouts, "
                       f"{got['ppo_epochs']} epoch, <= {tokens} tokens)", "s",
                       [(p["vllm"], p["hf"]) for p in got["ppo"]],
                       note=f"lower is better; weight sync {got['sync_s']:.2f} s of it")]


def engines_main(argv) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    import copy
    import os

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import torch
    from transformers import GPT2TokenizerFast, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from rlhf.data import DataConfig, load_splits
    from rlhf.engines import HF, engine_for
    from rlhf.ppo import PPOConfig, PPOTrainer, ValueModel

    tok = GPT2TokenizerFast.from_pretrained(ASSETS / "tokenizers" / "gpt2")
    tok.add_special_tokens({"pad_token": "<pad>"})
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **MODEL)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    rows = load_splits(DataConfig.from_mapping({"kind": "sft", "format": "tinystories", "max_rows": 4 * a.prompts,
                                                "source": str(ASSETS / "data/tinystories/stories.jsonl")})).train
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))[: a.prompts]
    prompt_ids = [tok(p).input_ids for p in prompts]
    settings = {"backend": "vllm", "vllm": {"kv_cache_memory_bytes": 512 << 20, "max_model_len": 512}}
    t0 = time.perf_counter()
    vllm = engine_for(settings, model)
    start_s = time.perf_counter() - t0
    kw = dict(pad_id=tok.pad_token_id, stop_ids=[tok.eos_token_id], max_new_tokens=a.new_tokens)

    def rate(engine, seed):
        t = time.perf_counter()
        n = int(engine.generate(model, prompt_ids, seed=seed, **kw).response_mask.sum())
        return n / (time.perf_counter() - t)

    rate(vllm, 0), rate(HF, 0)  # warm-up (and the first weight sync)
    rollout = [{"vllm": rate(vllm, i + 1), "hf": rate(HF, i + 1)} if i % 2 == 0 else
               {"hf": rate(HF, i + 1), "vllm": rate(vllm, i + 1)} for i in range(a.pairs)]

    torch.manual_seed(1)
    value_model = LlamaForSequenceClassification(LlamaConfig(**{**cfg.to_dict(), "num_labels": 1}))
    ppo_cfg = PPOConfig(total_iterations=10_000, rollout_batch_size=a.prompts, mini_batch_size=a.prompts // 2,
                        ppo_epochs=1, max_new_tokens=a.new_tokens, save_every=0)

    def trainer(engine):
        return PPOTrainer(ppo_cfg, copy.deepcopy(model), ValueModel(copy.deepcopy(value_model)), tok,
                          lambda p, c: [len(x) / 100 for x in c], prompts, prompt_ids, reference=model,
                          stop_ids=[tok.eos_token_id], engine=engine)

    sides = {"vllm": trainer(vllm), "hf": trainer(None)}

    def iteration(name):
        tr = sides[name]
        t = time.perf_counter()
        tr.optimise(tr.make_experience())
        tr.iteration += 1
        return time.perf_counter() - t

    iteration("vllm"), iteration("hf")  # warm-up
    ppo = []
    for i in range(a.pairs):
        order = ("vllm", "hf") if i % 2 == 0 else ("hf", "vllm")
        ppo.append({n: iteration(n) for n in order})
    t = time.perf_counter()
    sides["vllm"].policy.lm_head.weight.data.add_(0)  # an in-place write: the next rollout reloads
    vllm.sync(sides["vllm"].policy)
    sync_s = time.perf_counter() - t
    Path(a.out).write_text(json.dumps({"rollout": rollout, "ppo": ppo, "engine_start_s": start_s, "sync_s": sync_s,
                                       "ppo_batch": a.prompts, "ppo_epochs": 1, "threads": torch.get_num_threads(),
                                       "unit": "wall seconds"}, indent=1))


if __name__ == "__main__" and sys.argv[1:2] == ["engines"]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    engines_main(sys.argv[2:])
