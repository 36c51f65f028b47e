"""QLoRA (peft=qlora) on the CPU: the base in 4-bit NF4 through bitsandbytes' CPU kernels, LoRA
adapters trained by SFT, reward, DPO, PPO, GRPO and RLOO, and an artifact any stage loads without bitsandbytes
(the adapter + the adapter merged into the full-precision base, rlhf.quantization.merged_copy)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from rlhf.runner import run_stage as run

QUIET = ["logger=none", "debug=smoke", "evaluation.enabled=false", "peft=qlora", "trainer.learning_rate=1e-3"]
SCALE = 32 / 16  # conf/peft/lora.yaml: lora_alpha / r


def _adapter_deltas(run_dir) -> dict[str, torch.Tensor]:
    """Base-model weight name -> scale * B @ A of the adapter a run published (float32)."""
    ad = load_file(str(run_dir / "adapter/adapter_model.safetensors"))
    out = {}
    for k, a in ad.items():
        if ".lora_A." in k:
            b = ad[k.replace(".lora_A.", ".lora_B.")]
            out[k.replace("base_model.model.", "", 1).replace(".lora_A", "")] = SCALE * b.float() @ a.float()
    return out


def _check_published(run_dir, base: dict[str, torch.Tensor]) -> None:
    """The adapter trained (LoRA B starts at zero), the frozen base did not move, and the merged model
    is exactly base + the adapter's update on the adapted layers and the base elsewhere."""
    deltas = _adapter_deltas(run_dir)
    assert len(deltas) == 35, sorted(deltas)  # 5 blocks x 7 projections
    assert all(d.abs().sum() > 0 for d in deltas.values()), "an adapter did not train"
    merged = load_file(str(run_dir / "model/model.safetensors"))
    assert json.loads((run_dir / "artifact.json").read_text())["model_dir"] == "model"
    assert "quantization_config" not in json.loads((run_dir / "model/config.json").read_text())
    for k, w in base.items():
        if k not in merged:
            continue
        assert merged[k].dtype == torch.float32, k
        if k in deltas:  # TRL trains QLoRA adapters in bf16: the merge's rounding is bf16's (2^-8)
            assert (merged[k] - w - deltas[k]).norm() < 0.01 * deltas[k].norm(), k
        else:
            assert torch.equal(merged[k], w), k
    assert all(torch.isfinite(t).all() for t in merged.values())


@pytest.fixture(scope="module")
def sft(tmp_path_factory, compose_any):
    out = tmp_path_factory.mktemp("qlora") / "sft"
    run(compose_any(*QUIET), out)
    return out


@pytest.fixture(scope="module")
def rm(sft, compose_any):
    out = sft.parent / "rm"
    run(compose_any(*QUIET, "stage=reward", f"model.init_from={sft}", "model.max_length=64"), out)
    return out


def test_qlora_policy_is_nf4_in_float32_and_only_adapters_learn(compose):
    import bitsandbytes as bnb

    from rlhf.models import build_policy
    from rlhf.runner import validate

    cfg = compose("peft=qlora")
    validate(cfg)  # CPU: allowed, since a 4-bit layer runs here
    model = build_policy(cfg.model, cfg.peft)
    four = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four) == 35 and all(m.weight.quant_type == "nf4" and m.compute_dtype == torch.float32 for m in four)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    ids = torch.tensor([[1, 403, 407, 261, 378, 414, 270, 261]])
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if ".lora_B." in n]
    assert len(grads) == 35 and all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.slow
def test_sft_qlora_publishes_adapter_and_merged_base(sft, assets):
    from transformers import AutoModelForCausalLM

    _check_published(sft, load_file(str(assets / "models/stories260k/model.safetensors")))
    model = AutoModelForCausalLM.from_pretrained(str(sft / "model"))  # no bitsandbytes needed
    out = model.generate(torch.tensor([[1]]), max_new_tokens=8, do_sample=False)
    assert out.shape[1] > 1


@pytest.mark.slow
def test_reward_qlora_trains_adapter_and_score_head(sft, rm):
    from transformers import AutoModelForSequenceClassification

    _check_published(rm, {k: v for k, v in load_file(str(sft / "model/model.safetensors")).items()
                          if not k.startswith("lm_head")})
    model = AutoModelForSequenceClassification.from_pretrained(str(rm / "model"))
    scores = model(input_ids=torch.tensor([[1, 403, 407, 261], [1, 378, 414, 270]])).logits
    assert scores.shape == (2, 1) and torch.isfinite(scores).all() and scores[0] != scores[1]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["dpo", "ppo", "grpo", "rloo"])
def test_policy_stage_qlora_trains_adapter_over_frozen_base(stage, sft, rm, compose, tmp_path):
    extra = [f"stage.reward_model={rm}"] if stage == "ppo" else ["stage.reward_funcs=[length]"]
    if stage == "dpo":
        pairs = tmp_path / "pairs.jsonl"
        pairs.write_text("".join(json.dumps({"prompt": f"Tom had {i} balls.", "chosen": " He was happy.",
                                             "rejected": " He was sad and cried."}) + "\n" for i in range(40)))
        extra = ["data=generated", f"data.source={pairs}", "model.max_length=64", "trainer.beta=0.1"]
    run(compose(*QUIET, f"stage={stage}", f"model.init_from={sft}", *extra), tmp_path / stage)
    _check_published(tmp_path / stage, load_file(str(sft / "model/model.safetensors")))
