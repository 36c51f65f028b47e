"""Plain TRL reward model, as a user would write it: the peer of `rlhf stage=reward` in bench/run.py.

Only transformers, datasets and TRL's RewardTrainer, on {prompt, chosen, rejected} text rows (TRL
joins and tokenises them, appends EOS, drops pairs longer than max_length). Same model, rows,
batch, max_length, steps/epochs and seed as ours.
"""

import argparse
import json

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--train", required=True)
p.add_argument("--eval")
p.add_argument("--out", required=True)
p.add_argument("--steps", type=int, default=-1)
p.add_argument("--epochs", type=float, default=1)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--max-length", type=int, default=512)
p.add_argument("--lr", type=float, default=5e-5)
p.add_argument("--add-bos", action="store_true")
p.add_argument("--seed", type=int, default=42)
a = p.parse_args()


def rows(path):
    return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")}
                              for r in map(json.loads, open(path))])


tok = AutoTokenizer.from_pretrained(a.model)
if tok.pad_token is None:
    tok.pad_token = tok.unk_token or tok.eos_token
if a.add_bos:
    tok.add_bos_token = True
model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=1, dtype=torch.float32)
model.config.pad_token_id = tok.pad_token_id
cpu = not torch.cuda.is_available()
args = RewardConfig(
    output_dir=a.out, max_steps=a.steps, num_train_epochs=a.epochs, per_device_train_batch_size=a.batch,
    learning_rate=a.lr, lr_scheduler_type="linear", warmup_steps=0.05,
    max_length=a.max_length, center_rewards_coefficient=0.01, gradient_checkpointing=False, logging_steps=10,
    save_strategy="no", report_to="none", seed=a.seed, data_seed=a.seed, use_cpu=cpu, bf16=not cpu,
    disable_tqdm=True, eval_strategy="no", per_device_eval_batch_size=a.batch,
)
trainer = RewardTrainer(model=model, args=args, processing_class=tok, train_dataset=rows(a.train),
                        eval_dataset=rows(a.eval) if a.eval else None)
trainer.train()
if a.eval:
    trainer.evaluate()  # TRL logs its accuracy (mean over evaluation batches) rather than returning it
    with open(f"{a.out}/metrics.json", "w") as f:
        json.dump(trainer.state.log_history[-1], f)
trainer.save_model(f"{a.out}/model")
