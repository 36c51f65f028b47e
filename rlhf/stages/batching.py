"""Length-grouped SFT batches without a length bias: `stage.batching=grouped`.

transformers' `LengthGroupedSampler` (`train_sampling_strategy="group_by_length"`) permutes the
rows, cuts them into megabatches of 50 batches and sorts each megabatch longest-first. Padding is
small, but the batches of a megabatch come out in length order, so a run shorter than an epoch
(`max_steps`, a smoke run, early stopping) trains mostly on the longest rows of its first
megabatches: measured on TinyStories (bench/run.py, P2), its held-out loss after 20 steps was the
worst of the batching options.

`LengthGroupedBatches` groups the same way and then shuffles the order of the finished batches
over the whole epoch (seeded by seed + epoch), so every step draws a batch of similar-length rows
from the whole data: the padding saving stays, the bias goes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

MEGA_BATCH_MULT = 50  # batches sorted together, as transformers' default (fewer when the data is small)


def grouped_indices(lengths: Sequence[int], batch_size: int, seed: int) -> list[int]:
    """A permutation of `range(len(lengths))` whose consecutive slices of `batch_size` hold rows of
    similar length, the slices in random order; the one short slice (if len % batch_size) comes last,
    so a DataLoader cutting the list every `batch_size` indices gets exactly these batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(lengths)
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    mult = max(1, min(n // (batch_size * 4), MEGA_BATCH_MULT))
    mega = mult * batch_size
    batches: list[list[int]] = []
    for start in range(0, n, mega):
        block = sorted(order[start:start + mega], key=lambda i: lengths[i], reverse=True)
        batches += [block[i:i + batch_size] for i in range(0, len(block), batch_size)]
    short = [b for b in batches if len(b) < batch_size]  # at most one: the tail of the last megabatch
    full = [b for b in batches if len(b) == batch_size]
    rng.shuffle(full)
    return [i for b in full + short for i in b]


class LengthGroupedBatches:
    """A torch `Sampler` of row indices (duck-typed: `__iter__`, `__len__`, `set_epoch`).

    lengths: tokens per row (any unit that orders padding cost); batch_size: rows per device batch
    (the DataLoader's batch size); seed: the run's data seed. The Trainer calls `set_epoch` at each
    epoch, so epochs differ and a resumed run replays the same order.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths = list(lengths)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(grouped_indices(self.lengths, self.batch_size, self.seed + self.epoch))


def length_grouped(trainer_cls: type) -> type:
    """`trainer_cls` (a transformers/TRL Trainer) whose training batches come from
    `LengthGroupedBatches` over the lengths of the processed dataset's `input_ids`."""

    class LengthGrouped(trainer_cls):
        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            if ds is None or not hasattr(ds, "__len__") or "input_ids" not in getattr(ds, "column_names", ()):
                return super()._get_train_sampler(train_dataset)
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            lengths = [len(ids) for ids in ds["input_ids"]]
            return LengthGroupedBatches(lengths, self.args.per_device_train_batch_size, seed)

    LengthGrouped.__name__ = LengthGrouped.__qualname__ = f"LengthGrouped{trainer_cls.__name__}"
    return LengthGrouped
