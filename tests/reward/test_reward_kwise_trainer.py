import random

import pytest
from datasets import Dataset
from trl import RewardConfig

from rlhf.errors import UserError
from rlhf.reward import DataCollatorForRanked, KWiseRewardTrainer, evaluate_ranked, tokenize_ranked

WORDS = "the dog ran to the park and sat down with a big red ball".split()


def happy_rows(n, seed):
    """Learnable ranked rows: the more times "happy" appears, the better the response (no ties)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        counts = rng.sample(range(5), rng.choice([2, 3, 4]))
        responses = []
        for c in counts:
            words = rng.sample(WORDS, 6) + ["happy"] * c
            rng.shuffle(words)
            responses.append(" " + " ".join(words) + ".")
        best_first = sorted(counts, reverse=True)
        rows.append(
            {
                "prompt": "Once upon a time,",
                "responses": responses,
                "ranks": [best_first.index(c) for c in counts],
            }
        )
    return rows


def config(tmp_path, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        gradient_checkpointing=False,
        max_length=128,
        learning_rate=1e-3,
        per_device_train_batch_size=4,
        num_train_epochs=1,
        logging_steps=5,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
    )
    return RewardConfig(**{**kwargs, **overrides})


def test_collator_flattens_groups():
    batch = DataCollatorForRanked(pad_token_id=0)(
        [
            {"response_ids": [[5, 6, 7], [8]], "ranks": [1, 0]},
            {"response_ids": [[9, 9], [4], [3]], "ranks": [0, 0, 1]},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [9, 9, 0], [4, 0, 0], [3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0]]
    assert batch["group_ids"].tolist() == [0, 0, 1, 1, 1] and batch["ranks"].tolist() == [1, 0, 0, 0, 1]


def test_one_forward_pass_per_step(tmp_path, stories_reward_model, llama_tokenizer):
    rows = [  # one prompt of each K = 2, 3, 4
        {
            "prompt": "Once upon a time,",
            "responses": [" happy" + " dog" * i for i in range(k)],
            "ranks": list(range(k)),
        }
        for k in (2, 3, 4)
    ]
    train, _ = tokenize_ranked(rows, llama_tokenizer, 128)
    calls = []
    stories_reward_model.register_forward_hook(
        lambda mod, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    trainer = KWiseRewardTrainer(
        stories_reward_model,
        args=config(tmp_path, per_device_train_batch_size=3, max_steps=1),
        train_dataset=train,
        processing_class=llama_tokenizer,
    )
    trainer.train()
    assert calls == [2 + 3 + 4]


def test_training_learns_a_ranking(tmp_path, stories_reward_model, llama_tokenizer):
    train, _ = tokenize_ranked(happy_rows(80, seed=0), llama_tokenizer, 128)  # 20 steps of 4 prompts
    held_out, _ = tokenize_ranked(happy_rows(100, seed=1), llama_tokenizer, 128)
    trainer = KWiseRewardTrainer(
        stories_reward_model,
        args=config(tmp_path),
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=llama_tokenizer,
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 4 and logs[-1]["loss"] < logs[0]["loss"]
    assert {"accuracy", "num_pairs", "mean_reward", "std_reward"} <= set(logs[0])
    result = evaluate_ranked(stories_reward_model, held_out)
    assert result["accuracy"] > 0.7, result
    assert set(result["accuracy_by_k"]) == {2, 3, 4} and result["n_prompts"] == 100
    metrics = trainer.evaluate()
    assert metrics["eval_accuracy"] > 0.7 and "eval_num_pairs" in metrics


def test_untokenised_or_too_long_data_is_a_user_error(tmp_path, stories_reward_model, llama_tokenizer):
    raw = Dataset.from_list(happy_rows(2, seed=0))
    with pytest.raises(UserError, match="tokenize_ranked"):
        KWiseRewardTrainer(
            stories_reward_model, args=config(tmp_path), train_dataset=raw, processing_class=llama_tokenizer
        )
    long, _ = tokenize_ranked(happy_rows(2, seed=0), llama_tokenizer, 128)
    with pytest.raises(UserError, match="max_length=8"):
        KWiseRewardTrainer(
            stories_reward_model,
            args=config(tmp_path, max_length=8),
            train_dataset=long,
            processing_class=llama_tokenizer,
        )
