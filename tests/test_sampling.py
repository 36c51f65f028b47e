"""The lock-step schedule of sampling across ranks (rlhf.sampling.lockstep_batches): what ZeRO-3
needs (the same number of passes on every rank) without changing what any rank keeps."""

from __future__ import annotations

import math

import pytest

from rlhf.sampling import batches, lockstep_batches


@pytest.mark.parametrize("n,size,world", [(5, 2, 2), (6, 2, 2), (3, 2, 4), (1, 64, 2), (7, 1, 3)])
def test_every_rank_runs_as_many_batches_and_keeps_exactly_its_share(n, size, world):
    plans = [lockstep_batches(n, size, (r, world)) for r in range(world)]
    assert len({len(p) for p in plans}) == 1  # the same number of passes everywhere
    n_batches = math.ceil(n / size)
    assert len(plans[0]) == math.ceil(n_batches / world)  # no more passes than the busiest rank needs
    kept = sorted((b, tuple(span)) for p in plans for b, span, keep in p if keep)
    assert kept == [(b, tuple(span)) for b, span in batches(n, size)]  # together: one process's batches
    for r, p in enumerate(plans):  # what a rank keeps is its own shard, in order
        assert [(b, span) for b, span, keep in p if keep] == list(batches(n, size, (r, world)))
        assert all(len(span) > 0 for _, span, _ in p)  # a dummy batch is a real batch of prompts
