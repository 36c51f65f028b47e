import pytest
import torch

from rlhf.reward import (
    RewardScorer,
    evaluate_pairs,
    evaluate_ranked,
    score_ids,
    tokenize_pairs,
    tokenize_ranked,
)

PROMPTS = ["Once upon a time", "The dog ran", "Lily was", "A"]
RESPONSES = [" there was a cat.", " to the park and sat down.", " happy.", " b"]


def test_scores_do_not_depend_on_batching_or_padding(stories_reward_model, llama_tokenizer):
    stories_reward_model.train()  # dropout would make scores random; scoring must switch it off
    one_by_one = RewardScorer(stories_reward_model, llama_tokenizer, 64, batch_size=1)(PROMPTS, RESPONSES)
    together = RewardScorer(stories_reward_model, llama_tokenizer, 64, batch_size=3)(PROMPTS, RESPONSES)
    assert len(one_by_one) == 4 and torch.allclose(torch.tensor(one_by_one), torch.tensor(together), atol=1e-5)
    assert stories_reward_model.training  # the mode is restored


def test_scored_pairs_are_framed_like_training_rows(stories_reward_model, llama_tokenizer):
    ds, _ = tokenize_pairs([{"prompt": "Once upon", "chosen": " a time", "rejected": " a dog"}], llama_tokenizer, 64)
    scorer = RewardScorer(stories_reward_model, llama_tokenizer, 64)
    assert scorer.ids(["Once upon"], [" a time"]) == [ds[0]["chosen_ids"]]
    from_ids = score_ids(stories_reward_model, [ds[0]["chosen_ids"]], llama_tokenizer.pad_token_id)
    assert scorer(["Once upon"], [" a time"]) == pytest.approx(from_ids.tolist(), abs=1e-6)


def test_bert_scores_with_left_truncation(minilm_path, bert_tokenizer):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=1)
    long = "word " * 2000 + "end"
    scorer = RewardScorer(model, bert_tokenizer, 512, batch_size=2)
    assert max(len(x) for x in scorer.ids([long, "short"], [" yes", " no"])) == 512  # cut to 512 positions
    scores = torch.tensor(scorer([long, "short"], [" yes", " no"]))
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_evaluate_pairs_and_ranked_fields(stories_reward_model, llama_tokenizer):
    rows = [{"prompt": "Once", "chosen": f" upon {i}", "rejected": " x"} for i in range(5)]
    ds, _ = tokenize_pairs(rows, llama_tokenizer, 32)
    result = evaluate_pairs(stories_reward_model, llama_tokenizer, ds, batch_size=4)
    assert set(result) == {"accuracy", "loss", "reward_mean", "reward_std", "margin_mean", "n"} and result["n"] == 5
    chosen = score_ids(stories_reward_model, ds["chosen_ids"], llama_tokenizer.pad_token_id)
    rejected = score_ids(stories_reward_model, ds["rejected_ids"], llama_tokenizer.pad_token_id)
    assert result["accuracy"] == pytest.approx((chosen > rejected).float().mean().item())
    assert result["loss"] == pytest.approx(torch.nn.functional.softplus(rejected - chosen).mean().item(), rel=1e-5)

    ranked = [
        {"prompt": "Once", "responses": [" a", " b", " c"], "ranks": [0, 1, 1]},  # 2 pairs, one tie
        {"prompt": "Once", "responses": [" a", " b"], "ranks": [0, 0]},  # all tied: no pairs
        {"prompt": "Lily", "responses": [" a", " b"], "ranks": [1, 0]},  # 1 pair
    ]
    ds, _ = tokenize_ranked(ranked, llama_tokenizer, 32)
    result = evaluate_ranked(stories_reward_model, ds)
    assert result["n_prompts"] == 3 and result["n_pairs"] == 3
    assert set(result["accuracy_by_k"]) == {2, 3}
