"""K-wise reward training (InstructGPT): every response of a prompt scored in the same forward pass.

A thin subclass of TRL's RewardTrainer: model, tokenizer, pad token, PEFT and config handling are
TRL's; only the data path (already tokenised ranked rows), the collator and the loss change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from transformers.data.data_collator import DataCollatorMixin
from trl import RewardConfig, RewardTrainer
from trl.data_utils import get_dataset_column_names
from trl.trainer.utils import pad

from rlhf.errors import UserError

from .losses import kwise_loss


@dataclass
class DataCollatorForRanked(DataCollatorMixin):
    """Flattens the K responses of every prompt of a batch into one right-padded batch.

    Input rows: ``{"response_ids": [K id lists], "ranks": [K ints]}``. Output: ``input_ids`` and
    ``attention_mask`` of shape [sum K, L], ``group_ids`` (the row each response belongs to) and
    ``ranks``, both [sum K]. ``pad_token_id`` may be filled in after construction (the trainer sets it
    once it has settled the tokenizer's pad token).
    """

    pad_token_id: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.pad_token_id is None:
            raise ValueError("DataCollatorForRanked.pad_token_id is not set")
        seqs = [torch.tensor(ids) for ex in examples for ids in ex["response_ids"]]
        group_ids = [g for g, ex in enumerate(examples) for _ in ex["response_ids"]]
        ranks = [r for ex in examples for r in ex["ranks"]]
        return {
            "input_ids": pad(seqs, self.pad_token_id, "right", self.pad_to_multiple_of),
            "attention_mask": pad([torch.ones_like(s) for s in seqs], 0, "right", self.pad_to_multiple_of),
            "group_ids": torch.tensor(group_ids),
            "ranks": torch.tensor(ranks),
        }


class KWiseRewardTrainer(RewardTrainer):
    """RewardTrainer for ranked rows tokenised by ``tokenize_ranked`` (columns response_ids, ranks).

    Each step runs the model once over all responses of the batch (sum of K rows) and applies
    ``kwise_loss``; a batch of ``per_device_train_batch_size`` prompts therefore holds a variable number
    of sequences. Logs ``accuracy`` (over non-tied pairs), ``num_pairs`` and reward min/mean/max/std.
    """

    _tag_names = ["trl", "reward-trainer", "kwise"]

    def __init__(self, model, args: RewardConfig | None = None, data_collator=None, **kwargs):
        collator = data_collator or DataCollatorForRanked()
        super().__init__(model, args=args, data_collator=collator, **kwargs)
        if data_collator is None:  # RewardTrainer has now settled the pad token
            collator.pad_token_id = self.processing_class.pad_token_id
            collator.pad_to_multiple_of = self.args.pad_to_multiple_of

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """The rows arrive tokenised by tokenize_ranked: check them and hand them on unchanged."""
        columns = get_dataset_column_names(dataset)
        missing = [c for c in ("response_ids", "ranks") if c not in columns]
        if missing:
            raise UserError(
                f"the {dataset_name} dataset of KWiseRewardTrainer lacks column(s) {missing} "
                f"(has {list(columns)}): tokenise ranked rows with rlhf.reward.tokenize_ranked first"
            )
        if isinstance(dataset, Dataset) and args.max_length is not None and len(dataset):
            longest = max(len(ids) for row in dataset["response_ids"] for ids in row)
            if longest > args.max_length:
                raise UserError(
                    f"the {dataset_name} dataset has a sequence of {longest} tokens > max_length="
                    f"{args.max_length}: tokenise with tokenize_ranked(..., max_length={args.max_length})"
                )
        return dataset

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["response_ids", "ranks"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        # One forward pass over every response of every prompt in the batch.
        outputs = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
        )
        rewards = outputs.logits.squeeze(-1)
        loss, stats = kwise_loss(rewards, inputs["group_ids"], inputs["ranks"])
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * torch.mean(rewards**2)

        if mode == "train":
            num_tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += num_tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

        with torch.no_grad():
            r = rewards.detach().float()
            # Sums, not means, so processes with different numbers of responses combine exactly.
            local = torch.stack([stats["accuracy"] * stats["num_pairs"], stats["num_pairs"].float()])
            local = torch.cat([local, torch.stack([r.sum(), (r**2).sum(), r.new_tensor(r.numel())])])
            correct, pairs, total, total_sq, count = self.accelerator.gather(local[None]).sum(0).tolist()
            mean = total / count
            if pairs > 0:  # a batch of all-tied prompts says nothing about accuracy
                self._metrics[mode]["accuracy"].append(correct / pairs)
            self._metrics[mode]["num_pairs"].append(pairs)
            self._metrics[mode]["mean_reward"].append(mean)
            self._metrics[mode]["std_reward"].append(max(total_sq / count - mean**2, 0.0) ** 0.5)
            self._metrics[mode]["min_reward"].append(self.accelerator.gather(r.min()[None]).min().item())
            self._metrics[mode]["max_reward"].append(self.accelerator.gather(r.max()[None]).max().item())

        return (loss, outputs) if return_outputs else loss
