import pytest
import torch

from rlhf.reward import evaluate_pairs, evaluate_ranked, score_texts, tokenize_pairs, tokenize_ranked

TEXTS = ["Once upon a time", "The dog ran to the park and sat down.", "Lily was happy.", "A"]


def test_scores_do_not_depend_on_batching_or_padding(stories_reward_model, llama_tokenizer):
    stories_reward_model.train()  # dropout would make scores random; score_texts must switch it off
    one_by_one = score_texts(stories_reward_model, llama_tokenizer, TEXTS, batch_size=1)
    together = score_texts(stories_reward_model, llama_tokenizer, TEXTS, batch_size=3)
    assert one_by_one.shape == (4,) and torch.allclose(one_by_one, together, atol=1e-5)
    assert stories_reward_model.training  # the mode is restored


def test_texts_are_framed_like_training_rows(stories_reward_model, llama_tokenizer):
    ds, _ = tokenize_pairs(
        [{"prompt": "Once upon", "chosen": " a time", "rejected": " a dog"}], llama_tokenizer, 64
    )
    from_ids = score_texts(stories_reward_model, llama_tokenizer, [ds[0]["chosen_ids"]])
    from_text = score_texts(stories_reward_model, llama_tokenizer, ["Once upon a time"])
    assert torch.allclose(from_ids, from_text, atol=1e-5)


def test_bert_scores_with_left_truncation(minilm_path, bert_tokenizer):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=1)
    long = "word " * 2000 + "end"
    scores = score_texts(model, bert_tokenizer, [long, "short"], batch_size=2)  # cut to 512 positions
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_evaluate_pairs_and_ranked_fields(stories_reward_model, llama_tokenizer):
    rows = [{"prompt": "Once", "chosen": f" upon {i}", "rejected": " x"} for i in range(5)]
    ds, _ = tokenize_pairs(rows, llama_tokenizer, 32)
    result = evaluate_pairs(stories_reward_model, llama_tokenizer, ds, batch_size=4)
    assert set(result) == {"accuracy", "loss", "reward_mean", "reward_std", "margin_mean", "n"} and result["n"] == 5
    chosen = score_texts(stories_reward_model, llama_tokenizer, ds["chosen_ids"])
    rejected = score_texts(stories_reward_model, llama_tokenizer, ds["rejected_ids"])
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
