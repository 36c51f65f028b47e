"""Artifacts outside the framework: each model folder is loaded here with plain transformers / peft /
TRL (no `rlhf` import in the loading code) and must give the framework's numbers."""

from __future__ import annotations

import json
import os

import pytest
import torch

from rlhf.runner import run_stage as run

pytestmark = pytest.mark.slow  # every test here trains a stage or two (still run in CI)
QUIET = ["logger=none", "debug=smoke", "trainer.eval_strategy=no", "trainer.save_strategy=no"]


def _hh_pairs(assets, n: int, max_chars: int = 10_000) -> list[tuple[str, str]]:
    """(prompt, response) pairs of real HH dialogues: the prompt ends at the last "Assistant:"."""
    out = []
    for line in (assets / "data/hh-rlhf/harmless-base.jsonl").read_text().splitlines():
        text = json.loads(line)["chosen"]
        cut = text.rfind("\n\nAssistant:") + len("\n\nAssistant:")
        if len(text) - cut < max_chars:
            out.append((text[:cut], text[cut:]))
        if len(out) == n:
            return out
    return out


def _framework_scores(run_dir, prompts, responses) -> list[float]:
    from rlhf.models import load_reward_artifact
    from rlhf.reward import RewardScorer
    from rlhf.schema import Model

    model, tok, max_length = load_reward_artifact(str(run_dir), Model(name_or_path="unused"))
    return RewardScorer(model, tok, max_length, batch_size=4)(prompts, responses)


def _plain_scores(model_dir, pairs) -> list[float]:
    """The documented one line (rlhf.run.portable.REWARD_CALL), plain transformers."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return [model(**tokenizer(p, r, truncation="only_first", return_tensors="pt")).logits[0, 0].item()
                for p, r in pairs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("portable")


@pytest.fixture(scope="module")
def rm_llama(runs, compose_any):
    """A stories260k reward model (BOS/EOS frame) on HH pairs at max_length 64: most prompts are cut."""
    run(compose_any(*QUIET, "stage=reward", "model.max_length=64", "experiment_name=llama"), runs / "rm")
    return runs / "rm"


@pytest.fixture(scope="module")
def rm_bert(runs, compose_any):
    """An all-MiniLM-L6-v2 reward model ([CLS]/[SEP], no BOS/EOS, 512 positions) at its preset's 256."""
    run(compose_any(*QUIET, "stage=reward", "model=minilm", "experiment_name=bert"), runs / "rm_bert")
    return runs / "rm_bert"


def test_llama_reward_model_scores_the_same_with_one_plain_line(rm_llama, assets):
    pairs = [p for p in _hh_pairs(assets, 40, max_chars=80)][:12]  # responses that fit the 64-token window
    inside = _framework_scores(rm_llama, *zip(*pairs, strict=True))
    outside = _plain_scores(rm_llama / "model", pairs)
    assert outside == pytest.approx(inside, abs=1e-5)
    from transformers import AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(rm_llama / "model")
    ids = tok(*pairs[0], truncation="only_first").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 64  # the prompt was cut
    assert tok.truncation_side == "left" and tok.model_max_length == 64
    # a pipeline gives the raw reward (problem_type "regression"), not sigmoid(reward)
    pipe = pipeline("text-classification", model=str(rm_llama / "model"))
    piped = [pipe({"text": p, "text_pair": r}, truncation="only_first")["score"] for p, r in pairs[:4]]
    assert piped == pytest.approx(inside[:4], abs=1e-5)
    config = json.loads((rm_llama / "model/config.json").read_text())
    assert config["problem_type"] == "regression" and config["num_labels"] == 1 if "num_labels" in config else True


def test_bert_reward_model_scores_the_same_and_survives_a_long_input(rm_bert, assets):
    pairs = _hh_pairs(assets, 200, max_chars=400)
    pairs = sorted(pairs, key=lambda pr: -len(pr[0]))[:6]  # the longest dialogues: far past 512 tokens
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(rm_bert / "model")
    assert len(tok(pairs[0][0]).input_ids) > 512, "a dialogue longer than the model's 512 positions"
    ids = tok(*pairs[0], truncation="only_first").input_ids
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and len(ids) == 256
    assert tok.sep_token_id not in ids[1:-1]  # one [CLS] ... [SEP] frame, as trained (no [SEP] between)
    inside = _framework_scores(rm_bert, *zip(*pairs, strict=True))
    assert _plain_scores(rm_bert / "model", pairs) == pytest.approx(inside, abs=1e-5)


def test_conversational_reward_model_scores_the_same_through_apply_chat_template(runs, compose_any, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"Tell me story {i}."}],
             "chosen": [{"role": "assistant", "content": f"The cat was happy and played all day {i}."}],
             "rejected": [{"role": "assistant", "content": f"The cat was sad {i}."}]} for i in range(24)]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(compose_any(*QUIET, "stage=reward", "data=jsonl", "data.kind=pair", f"data.source={src}",
                    "model.chat_template=chatml", "model.max_length=64"), runs / "rm_chat")
    messages = [{"role": "user", "content": "Tell me a story about a dog."}]
    replies = ["The dog ran to the park and was happy.", "No."]
    inside = _framework_scores(runs / "rm_chat", [messages] * 2, replies)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(runs / "rm_chat/model")
    model = AutoModelForSequenceClassification.from_pretrained(runs / "rm_chat/model").eval()
    with torch.no_grad():
        outside = [model(**tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": r}],
                                                         return_dict=True, return_tensors="pt")).logits[0, 0].item()
                   for r in replies]
    assert outside == pytest.approx(inside, abs=1e-5)
    # ...and the framework frames a conversation as training did (the saved post-processor's EOS is
    # the plain-text frame's, not the conversation's)
    from rlhf.data.reward_encode import RewardEncoder
    from rlhf.models import load_tokenizer

    trained = load_tokenizer(compose_any("model.chat_template=chatml").model)
    turn = [{"role": "assistant", "content": replies[0]}]
    assert RewardEncoder(tokenizer, 64).encode_scored([messages], [turn]) == \
        RewardEncoder(trained, 64).encode_scored([messages], [turn])


def test_two_reward_models_get_distinct_names_in_trls_grpo(rm_llama, rm_bert, assets, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    links = [json.loads((d / "artifact.json").read_text())["extra"]["reward_link"] for d in (rm_llama, rm_bert)]
    assert links == ["rm-llama-rm", "rm-bert-rm_bert"]
    policy_path = assets / "models/stories260k"
    tok = AutoTokenizer.from_pretrained(policy_path)
    tok.pad_token = tok.unk_token
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=8, logging_steps=1, report_to="none", use_cpu=True, bf16=False)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_path), processing_class=tok, args=args,
                          reward_funcs=[str(rm_llama / links[0]), str(rm_bert / links[1])],
                          train_dataset=Dataset.from_dict({"prompt": ["Once upon a time", "Lily saw a dog"]}))
    assert trainer.reward_func_names == links
    trainer.train()
    logged = {k for h in trainer.state.log_history for k in h}
    assert {f"rewards/{n}/mean" for n in links} <= logged, logged


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.fixture(scope="module")
def sft(runs, compose_any):
    run(compose_any(*QUIET), runs / "sft")
    return runs / "sft"


def test_lora_dpo_adapter_loads_on_the_base_its_manifest_names(sft, runs, compose_any):
    run(compose_any(*QUIET, "stage=dpo", f"model.init_from={sft}", "peft=lora", "model.max_length=128",
                    "data.on_invalid=drop", "evaluation.enabled=false", "trainer.learning_rate=1e-2"), runs / "dpo")
    d = runs / "dpo"
    art = json.loads((d / "artifact.json").read_text())
    assert art["adapter_base"] == str(sft / "model")  # the weights it trained on, not the pretrained root
    assert art["base_model"] == json.loads((sft / "artifact.json").read_text())["base_model"]
    assert [s["stage"] for s in art["lineage"]] == ["sft", "dpo"] and art["lineage"][0]["run_dir"] == str(sft)
    assert not (d / "adapter/ref").exists()  # TRL's "ref" copy of the adapter is not saved
    cfg = json.loads((d / "adapter/adapter_config.json").read_text())
    assert not os.path.isabs(cfg["base_model_name_or_path"])  # relative to the adapter: survives a move
    assert os.path.realpath(d / "adapter" / cfg["base_model_name_or_path"]) == str(sft / "model")

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d / "adapter")
    ids = tok("Once upon a time, there was a little dog").input_ids
    merged = _logits(AutoModelForCausalLM.from_pretrained(d / "model"), ids)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(art["adapter_base"]), d / "adapter")
    assert (_logits(adapted, ids) - merged).abs().max() < 1e-4
    on_root = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(art["base_model"]), d / "adapter")
    assert (_logits(on_root, ids) - merged).abs().max() > 1e-2  # the wrong base really differs

    from huggingface_hub import ModelCard

    for folder in ("model", "adapter"):
        card = ModelCard.load(d / folder / "README.md")
        assert card.data.library_name == ("peft" if folder == "adapter" else "transformers")
        assert "## Lineage" in card.text and str(sft) in card.text and "## How to load" in card.text
    assert "PeftModel.from_pretrained" in ModelCard.load(d / "adapter/README.md").text
    # a policy's tokenizer keeps its own frame: no reward post-processor (EOS) on a policy artifact
    policy_tok = AutoTokenizer.from_pretrained(sft / "model")
    assert policy_tok("a").input_ids[-1] != policy_tok.eos_token_id
    assert not list(sft.glob("rm-*"))


def test_lora_adapter_that_grew_the_vocabulary_loads_after_a_resize(runs, compose_any, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Tell me story {i}."},
                          {"role": "assistant", "content": f"Once upon a time there was a cat number {i}."}]}
            for i in range(24)]
    src = tmp_path / "chat.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = runs / "sft_lora_chat"
    run(compose_any(*QUIET, "data=jsonl", "data.kind=sft", f"data.source={src}", "model.chat_template=chatml",
                    "peft=lora", "trainer.learning_rate=1e-2"), d)
    art = json.loads((d / "artifact.json").read_text())
    assert art["extra"]["base_vocab_size"] == 512 and art["extra"]["vocab_size"] == 514  # <|im_start|>, <|im_end|>
    assert "resize_token_embeddings" in (d / "adapter/README.md").read_text()

    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = str(d / "adapter")  # the model card's lines
    base = os.path.join(adapter, PeftConfig.from_pretrained(adapter).base_model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = AutoModelForCausalLM.from_pretrained(base)
    model.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(model, adapter)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Tell me a story."}], add_generation_prompt=True,
                                        return_dict=True)["input_ids"]
    assert max(ids) >= 512  # the new markers are in the input
    merged = AutoModelForCausalLM.from_pretrained(d / "model")
    assert (_logits(model, ids) - _logits(merged, ids)).abs().max() < 1e-4
