"""P3: a K-wise ranked reward loss vs the same lists expanded to pairwise rows.

Ours: `rlhf stage=reward` on OpenAssistant ranked lists (rlhf.reward.kwise_loss: each response
through the model once, the loss over all K(K-1)/2 non-tied pairs of its list). Peer: TRL's
RewardTrainer on every non-tied pair of the same lists as its own row (2 forward passes per
comparison). One epoch each on the same lists (a random-init 5M Llama with the GPT-2 vocabulary at
max_length 1024, so that 133 of the 142 training lists fit whole; stories260k's 512 tokens fit
31), held-out pairwise accuracy on the same held-out lists. When cost is proportional to sequences,
the speed-up cannot exceed (2 x pairs) / (responses): printed as the bound.
"""

from __future__ import annotations

import prep
from harness import Context, Row, peer, ratio_rows, side_by_side, write_jsonl
from harness import ours as rlhf

MODEL, MAX_LENGTH, EVAL_LISTS = "llama5m", 1024, 25


def p3_kwise(ctx: Context) -> list[Row]:
    ranked = prep.data_file(MODEL, "oasst", MAX_LENGTH, "reward", only_fitting=True, on_invalid="drop",
                            eval_fraction=0)
    train, held_out = prep.split_file(ranked, "ranked", EVAL_LISTS, MAX_LENGTH, MODEL, "reward")
    # --quick: the first 48 training lists; the held-out lists keep the smallest split hashes, so
    # our split of the smaller file is the same
    train = train[:ctx.pick(48, len(train))]
    work = ctx.out / "p3-data"
    lists = write_jsonl(work / "lists.jsonl", train + held_out)
    train_pairs = write_jsonl(work / "train_pairs.jsonl", prep.expand_pairs(train))
    eval_pairs = write_jsonl(work / "eval_pairs.jsonl", prep.expand_pairs(held_out))
    n_pairs, n_seqs, batch = len(prep.expand_pairs(train)), sum(len(r["responses"]) for r in train), 4

    def ours_cmd(out):
        return rlhf("stage=reward", *prep.model_overrides(MODEL, MAX_LENGTH), "data=jsonl", "data.kind=ranked",
                    f"data.source={lists}", f"data.eval_rows={EVAL_LISTS}", f"trainer.per_device_train_batch_size={batch}",
                    "trainer.eval_strategy=no", "trainer.save_strategy=no", f"run_dir={out}")

    def peer_cmd(out):
        return peer("reward", model=prep.model_dir(MODEL), train=train_pairs, eval=eval_pairs, out=out,
                    batch=2 * batch, max_length=MAX_LENGTH)

    res = side_by_side(ctx, "p3-kwise", ours_cmd, peer_cmd, ctx.reps(1, 2))
    rate = [(n_pairs / o.train_cpu(), n_pairs / p.train_cpu()) for o, p in res]
    acc = [(o.json("metrics.json")["eval_accuracy"], p.json("metrics.json")["eval_accuracy"]) for o, p in res]
    return [
        ratio_rows("P3", f"comparisons per training CPU-s, one epoch, K-wise lists vs expanded pairs ({len(train)} "
                   f"lists, mean K {n_seqs / len(train):.2f}, {n_pairs} pairs)", "pairs/s", rate, goal=">= 2.5",
                   note=f"higher is better; sequence-count bound {2 * n_pairs / n_seqs:.2f}x"),
        ratio_rows("P3", f"held-out pairwise accuracy after one epoch ({len(held_out)} lists)", "", acc,
                   note="random-init model: near chance on both sides"),
    ]
