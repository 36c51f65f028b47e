"""The SFT stage on the real stories260k model, TinyStories and TRL's SFTTrainer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from rlhf.errors import UserError
from rlhf.run.artifacts import Artifact, RunDir, read_artifact, write_artifact
from rlhf.runner import run_stage as run

FAST = ["logger=none", "trainer.eval_strategy=no", "trainer.save_strategy=no", "trainer.logging_steps=5"]


@pytest.mark.slow
def test_sft_lowers_held_out_loss_and_writes_a_loadable_artifact(compose, tmp_path):
    cfg = compose(*FAST, "data.max_rows=300", "trainer.learning_rate=3e-4",
                  "trainer.per_device_train_batch_size=8", "trainer.num_train_epochs=1")
    art = run(cfg, tmp_path / "sft")
    m = art.metrics
    assert m["eval_loss"] < m["eval_loss_before"], m
    assert m["params_trainable"] == m["params_total"] == 260032
    assert read_artifact(tmp_path / "sft", expect_kinds=("policy",)).kind == "policy"
    for name in ("config.yaml", "metrics.json", "model/model.safetensors", "model/tokenizer.json"):
        assert (tmp_path / "sft" / name).is_file(), name
    assert not (tmp_path / "sft" / "checkpoints").exists()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "sft" / "model")
    assert tok("Once").input_ids[0] == tok.bos_token_id == 1  # BOS on encode survives saving
    assert tok.pad_token == "<unk>" and model.config.pad_token_id == 0


def _tensors(path):
    return load_file(str(path / "model.safetensors"))


def test_lora_sft_saves_adapter_and_merged_model(compose, tmp_path, assets):
    art = run(compose(*FAST, "debug=smoke", "peft=lora", "trainer.learning_rate=1e-2"), tmp_path / "lora")
    assert art.adapter_dir == "adapter" and (tmp_path / "lora/adapter/adapter_model.safetensors").is_file()
    assert art.metrics["params_trainable"] < art.metrics["params_total"] / 2
    base, merged = _tensors(assets / "models/stories260k"), _tensors(tmp_path / "lora/model")
    assert set(base) == set(merged)  # merged back into a plain Llama checkpoint
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base[q], merged[q])
    assert torch.equal(base["model.norm.weight"], merged["model.norm.weight"])  # not a LoRA target


def test_freeze_lower_layers_trains_only_the_top(compose, tmp_path, assets):
    run(compose(*FAST, "debug=smoke", "model.freeze_layers=3", "trainer.learning_rate=1e-2"), tmp_path / "frozen")
    base, tuned = _tensors(assets / "models/stories260k"), _tensors(tmp_path / "frozen/model")
    for i in range(3):
        assert torch.equal(base[f"model.layers.{i}.mlp.up_proj.weight"], tuned[f"model.layers.{i}.mlp.up_proj.weight"])
    for i in (3, 4):
        assert not torch.equal(base[f"model.layers.{i}.mlp.up_proj.weight"], tuned[f"model.layers.{i}.mlp.up_proj.weight"])


def test_sft_refuses_a_reward_artifact(compose, tmp_path):
    rm = tmp_path / "rm"
    with RunDir(rm):
        (rm / "model").mkdir()
        write_artifact(rm, Artifact(stage="reward", kind="reward", model_dir="model", base_model="x", tokenizer_dir="model"))
    with pytest.raises(UserError) as e:
        run(compose(*FAST, "debug=smoke", f"model.init_from={rm}"), tmp_path / "sft")
    assert "holds a reward model" in e.value.message
    assert not (tmp_path / "sft").exists()


def test_sft_from_an_sft_artifact(compose, tmp_path):
    first = run(compose(*FAST, "debug=smoke"), tmp_path / "a")
    second = run(compose(*FAST, "debug=smoke", f"model.init_from={tmp_path / 'a'}"), tmp_path / "b")
    assert second.base_model == first.base_model  # lineage points at the original base


def test_cli_bad_rows_exit_2_with_file_and_line(cli, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Hi", "completion": "there"}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n")
    res = cli("data=jsonl", "data.kind=sft", f"data.source={bad}", "logger=none")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "bad.jsonl:2" in res.stderr and "completion" in res.stderr and "Traceback" not in res.stderr
    assert not any(p.is_file() for p in (tmp_path / "runs").rglob("*")) if (tmp_path / "runs").exists() else True


@pytest.mark.slow
def test_wandb_runs_offline_without_an_api_key(cli, tmp_path):
    res = cli("debug=smoke", "logger=wandb", "run_dir=" + str(tmp_path / "w"), env={"WANDB_MODE": ""})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "W&B offline" in res.stdout + res.stderr
    runs = list((tmp_path / "w" / "wandb").glob("offline-run-*"))
    assert runs, "no offline W&B run recorded"
    assert (tmp_path / "w" / "artifact.json").is_file()
