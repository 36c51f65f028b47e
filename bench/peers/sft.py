"""Plain TRL SFT, as a user would write it: the peer of `rlhf stage=sft` in bench/run.py.

Only transformers, datasets and TRL. Same model, rows, batch, max_length, steps, learning-rate
schedule and seed as ours; `--batching` picks TRL's/transformers' own options:
padded (TRL's default), packed (TRL's best-fit-decreasing packing), group_by_length (transformers'
length-grouped sampler).
"""

import argparse
import json

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

BATCHING = {
    "padded": {},
    "packed": {"packing": True, "packing_strategy": "bfd", "eval_packing": False},
    "group_by_length": {"train_sampling_strategy": "group_by_length"},
}

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--train", required=True)
p.add_argument("--eval")
p.add_argument("--out", required=True)
p.add_argument("--steps", type=int, required=True)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--eval-batch", type=int, default=32)
p.add_argument("--eval-steps", type=int)
p.add_argument("--max-length", type=int, default=512)
p.add_argument("--lr", type=float, default=5e-4)
p.add_argument("--batching", choices=list(BATCHING), default="padded")
p.add_argument("--add-bos", action="store_true", help="stories260k was trained with BOS first")
p.add_argument("--seed", type=int, default=42)
a = p.parse_args()


def rows(path):
    return Dataset.from_list([json.loads(line) for line in open(path)])


tok = AutoTokenizer.from_pretrained(a.model)
if tok.pad_token is None:
    tok.pad_token = tok.unk_token or tok.eos_token
if a.add_bos:
    tok.add_bos_token = True
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
model.config.pad_token_id = tok.pad_token_id
cpu = not torch.cuda.is_available()
args = SFTConfig(
    output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=a.batch, per_device_eval_batch_size=a.eval_batch,
    learning_rate=a.lr, lr_scheduler_type="cosine", warmup_steps=0.03, max_length=a.max_length,
    gradient_checkpointing=False, logging_steps=10, save_strategy="no", report_to="none", seed=a.seed,
    data_seed=a.seed, use_cpu=cpu, bf16=not cpu, disable_tqdm=True,
    eval_strategy="steps" if a.eval and a.eval_steps else "no", eval_steps=a.eval_steps, **BATCHING[a.batching],
)
trainer = SFTTrainer(model=model, args=args, processing_class=tok, train_dataset=rows(a.train),
                     eval_dataset=rows(a.eval) if a.eval else None)
trainer.train()
if a.eval:
    trainer.evaluate()
trainer.save_model(f"{a.out}/model")
