"""SFT batching options side by side: real (non-pad) tokens/s on stories260k + TinyStories.

    python bench/sft_batching.py [--steps 40] [--batch 16] [--max-length 512] [--modes grouped,padded,packed,wrapped]

Each mode trains the same model from the same weights for the same number of optimizer steps
through TRL's SFTTrainer, with the SFTConfig fields our `stage.batching` maps to. Tokens/s counts
only real tokens (TRL's `num_tokens`), so padding is not rewarded. `wrapped` is listed for
reference: it is fast but lets examples attend to each other across the wrap.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--modes", default="grouped,padded,packed,wrapped")
    ap.add_argument("--assets", default=os.environ.get("RLHF_ASSETS_DIR", str(ROOT.parent / "shared" / "assets")))
    a = ap.parse_args()

    import torch
    from datasets import Dataset
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from rlhf.data import DataConfig, load_splits
    from rlhf.models import load_tokenizer
    from rlhf.stages.sft import BATCHING

    torch.manual_seed(0)
    model_path = f"{a.assets}/models/stories260k"
    model_cfg = OmegaConf.create(dict(name_or_path=model_path, tokenizer=None, trust_remote_code=False, revision=None,
                                      pad_token=None, add_bos=True))
    tok = load_tokenizer(model_cfg)
    splits = load_splits(DataConfig(kind="sft", source=f"{a.assets}/data/tinystories/stories.jsonl",
                                    format="tinystories", eval_fraction=0.0, on_invalid="drop"),
                         tokenizer=tok, max_length=a.max_length)
    train = Dataset.from_list(splits.train)
    rows = []
    for mode in a.modes.split(","):
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        model.config.pad_token_id = tok.pad_token_id
        with tempfile.TemporaryDirectory() as out:
            args = SFTConfig(output_dir=out, max_steps=a.steps, per_device_train_batch_size=a.batch,
                             learning_rate=5e-4, max_length=a.max_length, use_cpu=True, bf16=False,
                             gradient_checkpointing=False, report_to="none", save_strategy="no",
                             logging_steps=a.steps, disable_tqdm=True, seed=0, **BATCHING[mode])
            trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tok)
            t0 = time.perf_counter()
            trainer.train()
            dt = time.perf_counter() - t0
            toks = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h][-1]
            loss = [h["loss"] for h in trainer.state.log_history if "loss" in h][-1]
        rows.append((mode, toks, dt, toks / dt, loss))
        print(f"{mode}: {toks:.0f} tokens in {dt:.1f}s", flush=True)

    base = dict((r[0], r[3]) for r in rows).get("packed")
    print(f"\nSFT batching, stories260k, batch {a.batch}, max_length {a.max_length}, {a.steps} steps, "
          f"{torch.get_num_threads()} threads")
    print(f"{'mode':<10}{'real tokens':>12}{'seconds':>9}{'tokens/s':>10}{'vs packed':>11}{'last loss':>11}  leaks?")
    for mode, toks, dt, tps, loss in rows:
        rel = f"{tps / base:.1f}x" if base else "-"
        leak = "yes" if mode == "wrapped" else "no"
        print(f"{mode:<10}{toks:>12.0f}{dt:>9.1f}{tps:>10.0f}{rel:>11}{loss:>11.3f}  {leak}")


if __name__ == "__main__":
    main()
