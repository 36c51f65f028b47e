"""`stage.batching=grouped`: batches of similar length, in random order (rlhf/stages/batching.py)."""

from __future__ import annotations

import random
import statistics

import pytest

from rlhf.stages.batching import LengthGroupedBatches, grouped_indices, length_grouped

BATCH = 16


def _lengths(n=2000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(8, 512) for _ in range(n)]


def _batches(order, batch=BATCH):
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def _padding_share(lengths, order):
    pad = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in _batches(order))
    return pad / sum(lengths)


def test_every_row_once_little_padding_and_no_length_bias_at_the_start():
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths = _lengths()
    ours = grouped_indices(lengths, BATCH, seed=1)
    assert sorted(ours) == list(range(len(lengths)))
    shuffled = list(range(len(lengths)))
    random.Random(1).shuffle(shuffled)
    # as little padding as transformers' length-grouped sampler, far less than random batches
    theirs = get_length_grouped_indices(lengths, BATCH, generator=torch.Generator().manual_seed(1))
    assert _padding_share(lengths, ours) <= 1.05 * _padding_share(lengths, theirs)
    assert _padding_share(lengths, ours) < 0.2 * _padding_share(lengths, shuffled)
    # a run of 20 steps: transformers' sampler sees the longest rows first; ours a fair sample
    # (over seeds: a batch is a cluster of similar lengths, so one run's 20 batches vary a lot)
    mean = statistics.mean(lengths)
    seeds = range(30)
    first = [statistics.mean(lengths[i] for i in grouped_indices(lengths, BATCH, s)[:20 * BATCH]) for s in seeds]
    first_theirs = [statistics.mean(lengths[i] for i in get_length_grouped_indices(
        lengths, BATCH, generator=torch.Generator().manual_seed(s))[:20 * BATCH]) for s in seeds]
    assert min(first_theirs) > 1.2 * mean
    assert abs(statistics.mean(first) - mean) < 0.06 * mean


def test_the_short_batch_comes_last_and_epochs_differ_but_replay():
    lengths = _lengths(1000)  # 1000 = 62 full batches of 16 + one of 8
    order = grouped_indices(lengths, BATCH, seed=3)
    sizes = [len(b) for b in _batches(order)]
    assert sizes[:-1] == [BATCH] * 62 and sizes[-1] == 8
    sampler = LengthGroupedBatches(lengths, BATCH, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first == order and second != first and len(sampler) == 1000
    sampler.set_epoch(1)
    assert list(sampler) == second  # a resumed run replays its epoch
    with pytest.raises(ValueError):
        grouped_indices(lengths, 0, seed=0)


def test_sft_trainer_draws_its_batches_from_the_grouped_sampler(assets, tmp_path):
    """The real TRL SFTTrainer, as `stage.batching=grouped` builds it: its training dataloader
    yields batches of similar length (little padding) and its sampler is ours."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    path = assets / "models" / "stories260k"
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = tok.unk_token
    rng = random.Random(0)
    rows = [{"prompt": "Once upon a time", "completion": " a" * rng.randint(2, 200)} for _ in range(256)]
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, max_length=512, use_cpu=True,
                     bf16=False, report_to="none", seed=7, data_seed=7)
    trainer = length_grouped(SFTTrainer)(model=AutoModelForCausalLM.from_pretrained(path), args=args,
                                         processing_class=tok, train_dataset=Dataset.from_list(rows))
    assert isinstance(trainer._get_train_sampler(), LengthGroupedBatches)
    batches = list(trainer.get_train_dataloader())
    assert sum(len(b["input_ids"]) for b in batches) == 256
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)
    assert real / padded > 0.9  # random batches of these rows would be about 2/3 real tokens
