"""Plain TRL DPO, as a user would write it: the peer of `rlhf stage=dpo` in bench/run.py.

Only transformers, datasets and TRL's DPOTrainer (it builds the reference model from the policy).
Same model, pairs, batch, max_length, steps, beta and seed as ours.
"""

import argparse
import json

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--train", required=True)
p.add_argument("--out", required=True)
p.add_argument("--steps", type=int, required=True)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--max-length", type=int, default=512)
p.add_argument("--lr", type=float, default=5e-6)
p.add_argument("--add-bos", action="store_true")
p.add_argument("--seed", type=int, default=42)
a = p.parse_args()

tok = AutoTokenizer.from_pretrained(a.model)
if tok.pad_token is None:
    tok.pad_token = tok.unk_token or tok.eos_token
if a.add_bos:
    tok.add_bos_token = True
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
model.config.pad_token_id = tok.pad_token_id
train = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in map(json.loads, open(a.train))])
cpu = not torch.cuda.is_available()
args = DPOConfig(
    output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=a.batch, learning_rate=a.lr,
    lr_scheduler_type="linear", warmup_steps=0.1, beta=0.1, max_length=a.max_length, gradient_checkpointing=False,
    logging_steps=10, save_strategy="no", report_to="none", seed=a.seed, data_seed=a.seed, use_cpu=cpu,
    bf16=not cpu, disable_tqdm=True,
)
trainer = DPOTrainer(model=model, args=args, processing_class=tok, train_dataset=train)
trainer.train()
trainer.save_model(f"{a.out}/model")
