import pytest

from rlhf.errors import UserError
from rlhf.reward import tokenize_pairs, tokenize_ranked

TURN = (
    "\n\nHuman: Can you tell me a long story about a dog and a cat who went to the park?\n\nAssistant: Sure."
)
PROMPT = TURN * 12 + "\n\nHuman: And what happened at the end?\n\nAssistant:"
CHOSEN = " They became friends and went home happy."
REJECTED = " I do not want to talk about that."


def frame(tokenizer):
    """(leading, trailing) special ids expected around the content."""
    if tokenizer.cls_token_id is not None:  # BERT: [CLS] … [SEP], no BOS/EOS
        return [tokenizer.cls_token_id], [tokenizer.sep_token_id]
    return [tokenizer.bos_token_id], [tokenizer.eos_token_id]  # stories260k: <s>=1 … </s>=2


def bare(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(params=["llama", "bert"])
def tokenizer(request, llama_tokenizer, bert_tokenizer):
    return llama_tokenizer if request.param == "llama" else bert_tokenizer


def test_long_row_keeps_responses_and_cuts_prompt_on_the_left(tokenizer):
    max_length = 64
    prompt_ids = bare(tokenizer, PROMPT)
    assert len(prompt_ids) > 3 * max_length  # really over-long
    ds, report = tokenize_pairs(
        [{"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED}], tokenizer, max_length
    )
    assert ds.column_names == ["chosen_ids", "rejected_ids"]
    assert (report.n_rows, report.n_truncated) == (1, 1)
    head, tail = frame(tokenizer)
    chosen, rejected = bare(tokenizer, CHOSEN), bare(tokenizer, REJECTED)
    for ids, response in [(ds[0]["chosen_ids"], chosen), (ds[0]["rejected_ids"], rejected)]:
        assert len(ids) <= max_length
        assert ids[: len(head)] == head and ids[-len(tail) :] == tail
        body = ids[len(head) : -len(tail)]
        assert body[-len(response) :] == response  # the response is intact
        kept_prompt = body[: -len(response)]
        assert kept_prompt == prompt_ids[-len(kept_prompt) :]  # the prompt's end survives
    # One prompt window for both responses, as long as the longer response allows.
    longest = max(len(chosen), len(rejected))
    assert max(len(ds[0]["chosen_ids"]), len(ds[0]["rejected_ids"])) == max_length
    assert len(kept_prompt) == max_length - len(head) - len(tail) - longest
    squash = lambda s: "".join(s.split()).lower()  # noqa: E731  (decoding spaces differ by tokenizer)
    text = squash(tokenizer.decode(ds[0]["chosen_ids"], skip_special_tokens=True))
    assert text.endswith(squash("And what happened at the end?\n\nAssistant:" + CHOSEN))


def test_short_row_is_untouched(tokenizer):
    row = {"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": CHOSEN, "rejected": REJECTED, "margin": 1.5}
    ds, report = tokenize_pairs([row], tokenizer, max_length=128)
    head, tail = frame(tokenizer)
    assert ds[0]["chosen_ids"] == head + bare(tokenizer, row["prompt"]) + bare(tokenizer, CHOSEN) + tail
    assert ds[0]["margin"] == 1.5
    assert report.n_truncated == 0


def test_bert_ids_match_plain_tokenisation_when_they_fit(bert_tokenizer):
    # What TRL's RewardTrainer would feed for a row that fits: tokenizer(prompt + response).
    row = {"prompt": "\n\nHuman: Hi there\n\nAssistant:", "chosen": CHOSEN, "rejected": REJECTED}
    ds, _ = tokenize_pairs([row], bert_tokenizer, max_length=128)
    assert ds[0]["chosen_ids"] == bert_tokenizer(row["prompt"] + CHOSEN)["input_ids"]


def test_overlong_response_keeps_its_start_and_the_specials(tokenizer):
    long_response = " happy dog" * 200
    ds, report = tokenize_pairs(
        [{"prompt": PROMPT, "chosen": long_response, "rejected": "No."}], tokenizer, 32
    )
    head, tail = frame(tokenizer)
    ids = ds[0]["chosen_ids"]
    assert len(ids) == 32 and ids[: len(head)] == head and ids[-len(tail) :] == tail
    assert ids[len(head) : -len(tail)] == bare(tokenizer, long_response)[: 32 - len(head) - len(tail)]
    assert ds[0]["rejected_ids"] == head + bare(tokenizer, "No.") + tail  # the prompt is gone for both
    assert report.n_truncated == 1


def test_ranked_rows_share_one_prompt_window(tokenizer):
    rows = [
        {"prompt": PROMPT, "responses": [CHOSEN, REJECTED, " Ok."], "ranks": [0, 1, 1]},
        {"prompt": "Hi", "responses": [" a", " b"], "ranks": [1, 0]},
    ]
    ds, report = tokenize_ranked(rows, tokenizer, max_length=48)
    assert ds.column_names == ["response_ids", "ranks"]
    assert ds[0]["ranks"] == [0, 1, 1] and [len(x) for x in ds["response_ids"]] == [3, 2]
    assert report.n_truncated == 1
    head, tail = frame(tokenizer)
    prompts = []
    for ids, text in zip(ds[0]["response_ids"], rows[0]["responses"], strict=True):
        assert len(ids) <= 48
        response = bare(tokenizer, text)
        assert ids[len(head) : -len(tail)][-len(response) :] == response
        prompts.append(ids[len(head) : -len(tail) - len(response)])
    assert prompts[0] == prompts[1] == prompts[2] and prompts[0]


def test_rows_left_identical_or_no_room_are_user_errors(llama_tokenizer):
    same_start = " The dog ran to the park and played with a ball all day long." * 4
    rows = [{"prompt": "p", "chosen": same_start + " Happy.", "rejected": same_start + " Sad."}]
    with pytest.raises(UserError, match="identical after truncation to 32 tokens"):
        tokenize_pairs(rows, llama_tokenizer, 32)
    with pytest.raises(UserError, match="no room"):
        tokenize_pairs([{"prompt": "p", "chosen": "c", "rejected": "r"}], llama_tokenizer, 2)


@pytest.mark.parametrize("add_bos", [False, True])
def test_bos_is_the_tokenizers_own_as_model_add_bos_says(stories_path, tmp_path, add_bos):
    """A GPT-2 vocabulary (BOS = EOS = <|endoftext|>) with `model.add_bos: false` is framed as TRL's
    RewardTrainer frames a pair (the joined text, then EOS); with `add_bos: true` BOS comes first.
    (Before: BOS was always prepended, one token more than asked and than TRL on every sequence.)"""
    from omegaconf import OmegaConf
    from transformers import GPT2TokenizerFast

    from rlhf.models import load_tokenizer

    gpt2 = tmp_path / "gpt2"  # the asset is vocab + merges only: saved once as a fast tokenizer (as bench/prep.py)
    GPT2TokenizerFast.from_pretrained(stories_path.parents[1] / "tokenizers" / "gpt2").save_pretrained(gpt2)
    tok = load_tokenizer(OmegaConf.create({"name_or_path": str(gpt2), "tokenizer": None, "revision": None,
                                           "trust_remote_code": False, "pad_token": None, "add_bos": add_bos}))
    prompt, chosen, rejected = "\n\nHuman: Hi there\n\nAssistant:", " Hello, how can I help?", " Go away."
    ds, _ = tokenize_pairs([{"prompt": prompt, "chosen": chosen, "rejected": rejected}], tok, 64)
    for ids, response in ((ds[0]["chosen_ids"], chosen), (ds[0]["rejected_ids"], rejected)):
        expected = bare(tok, prompt + response) + [tok.eos_token_id]
        assert ids == ([tok.bos_token_id] + expected if add_bos else expected)
