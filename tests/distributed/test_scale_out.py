"""Several processes, one run, through the real launchers on 2 CPU processes (gloo):

- the `deepspeed` launcher running the `rlhf` app: every stage (the smoke pipeline: sft, generate,
  reward, dpo, ppo (ours: one DeepSpeed engine for policy + value), grpo, rloo, eval) under ZeRO-2 and ZeRO-3, each training stage with LoRA and fully
  fine-tuned (4 launches, each mixing LoRA and full steps); each run dir has the layout one process
  writes, and a model `from_pretrained` loads whole; the ZeRO-3 checkpoint holds the trained weights;
  under ZeRO-3, DPO and PPO also evaluate during training (`policy_eval/*` curves) across the two
  ranks, and their final evaluation equals a one-process evaluation of the saved policy;
- `torchrun` with 2 "nodes" x 1 process meeting at a localhost rendezvous;
- `accelerate launch`;

Slow (about a minute per launch on 2 cores; DeepSpeed JIT-builds a CPU op on its first launch).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

BIN = Path(sys.executable).parent
SMOKE_STEPS = ["sft", "generate", "reward", "dpo", "ppo", "grpo", "rloo", "eval"]
KINDS = {"sft": "policy", "generate": "data", "reward": "reward", "dpo": "policy", "ppo": "policy", "grpo": "policy",
         "rloo": "policy", "eval": "eval"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(runs: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "WANDB_API_KEY")}
    # one thread per process: 2 processes share the 2 cores of a CI runner
    env.update(RLHF_RUNS_DIR=str(runs), WANDB_MODE="offline", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    res.log = f"$ {' '.join(cmd)}\n--- stdout\n{res.stdout[-6000:]}\n--- stderr\n{res.stderr[-6000:]}"
    return res


def _deepspeed(tmp_path: Path, *overrides: str, timeout: int = 900):
    runs = tmp_path / "runs"
    cmd = [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(_port()), str(BIN / "rlhf"),
           *overrides, "logger=none"]
    return _run(cmd, tmp_path, _env(runs), timeout), runs


def _layout(run_dir: Path) -> set[str]:
    """Relative paths of a run dir, minus what legitimately varies (logs)."""
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and p.suffix != ".log"}


def _check_loadable(run_dir: Path, kind: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForCausalLM if kind == "policy" else AutoModelForSequenceClassification
    path = run_dir if kind == "value" else run_dir / "model"
    model, info = cls.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ids = torch.tensor([[1, 403, 407, 261, 378]])
    out = model(input_ids=ids).logits
    assert torch.isfinite(out).all() and out.abs().sum() > 0


@pytest.fixture(scope="module")
def one_process_layout(tmp_path_factory) -> dict[str, set[str]]:
    """The smoke pipeline with LoRA in one plain process: the layout every launch must reproduce."""
    tmp = tmp_path_factory.mktemp("one")
    res = _run([str(BIN / "rlhf"), "pipeline=smoke", "peft=lora", "logger=none"], tmp, _env(tmp / "runs"))
    assert res.returncode == 0, res.log
    pdir = tmp / "runs/smoke/pipeline"
    return {step: _layout(pdir / step) for step in SMOKE_STEPS}


TRAINING = ["sft", "reward", "dpo", "ppo", "grpo", "rloo"]


# The evaluation across ranks (ZeRO-3 launches): DPO and PPO also evaluate during training, each rank
# its share of the held-out prompts in batches of 1 (3-4 prompts: 2 batches on one rank, 1-2 on the
# other, which runs a dummy batch in lock-step). DPO publishes its best point (by gold): under ZeRO-3
# its trainable parameters are gathered at each new best point and written back before saving. The
# eval step measures the DPO policy the same way, on rank 0 alone with whole models (the one-process
# evaluation).
CURVES = {"dpo": ["evaluation.every_steps=2", "evaluation.generation.batch_size=1", "monitor.publish=best"],
          "ppo": ["evaluation.every_steps=1", "evaluation.generation.batch_size=1"],
          "eval": ["+data@evaluation.data=tinystories", "evaluation.data.max_rows=64",
                   "evaluation.generation.batch_size=1"]}
CURVE_STEPS = {"dpo": [2, 4], "ppo": [1, 2]}


def _mixed_pipeline(conf_dir: Path, lora_steps: set[str], curves: bool = False) -> None:
    """conf/pipeline/smoke.yaml with `peft=lora` on some training steps and `peft=none` on the others:
    two launches then cover every training stage under LoRA and under full fine-tuning. `curves`:
    with the `CURVES` overrides."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "pipeline/smoke.yaml")
    for step in cfg.pipeline.steps:
        if step.name in TRAINING:
            step.overrides.append(f"peft={'lora' if step.name in lora_steps else 'none'}")
        if curves:
            step.overrides.extend(CURVES.get(step.name, []))
    (conf_dir / "pipeline").mkdir(parents=True)
    OmegaConf.save(cfg, conf_dir / "pipeline/smoke_mixed.yaml")
    text = (conf_dir / "pipeline/smoke_mixed.yaml").read_text()
    (conf_dir / "pipeline/smoke_mixed.yaml").write_text("# @package _global_\n" + text)


# Each launch mixes LoRA and full steps; with its complement, every (stage, ZeRO stage, LoRA/full) runs once.
HALF = {"reward", "grpo", "ppo"}
MIXES = [("zero2", HALF), ("zero2", set(TRAINING) - HALF), ("zero3", set(TRAINING) - HALF), ("zero3", HALF)]


@pytest.mark.parametrize("zero,lora", MIXES, ids=lambda x: x if isinstance(x, str) else "lora=" + "+".join(sorted(x)))
def test_every_stage_under_the_deepspeed_launcher(tmp_path, one_process_layout, assets, zero, lora):
    _mixed_pipeline(tmp_path / "conf", lora, curves=zero == "zero3")
    res, runs = _deepspeed(tmp_path, "--config-dir", str(tmp_path / "conf"), "pipeline=smoke_mixed",
                           f"deepspeed={zero}")
    assert res.returncode == 0, res.log
    pdir = runs / "smoke/pipeline"
    # one directory for both ranks, nothing else under runs/, and one summary (rank 0's)
    assert sorted(p.name for p in runs.rglob("*") if p.is_dir() and p.parent == pdir) == sorted(SMOKE_STEPS)
    assert {p.relative_to(runs).parts[0] for p in runs.iterdir()} == {"smoke"}
    assert res.stdout.count("== pipeline summary ==") == 1, res.log
    assert list(json.loads((pdir / "summary.json").read_text())) == SMOKE_STEPS
    for step in SMOKE_STEPS:
        run_dir = pdir / step
        art = json.loads((run_dir / "artifact.json").read_text())
        assert art["kind"] == KINDS[step], art
        assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
        expected = one_process_layout[step]
        if step in TRAINING and step not in lora:  # full fine-tuning: no adapter/
            expected = {p for p in expected if not p.startswith("adapter/")}
        assert _layout(run_dir) == expected, (step, _layout(run_dir) ^ expected)
        if art["kind"] in ("policy", "reward"):
            _check_loadable(run_dir, art["kind"])
            assert art["metrics"]["params_total"] > 200_000  # whole-model counts, not one rank's shard
    _check_loadable(pdir / "ppo" / "value", "value")  # PPO's value model, gathered whole like the policy
    ppo = json.loads((pdir / "ppo" / "artifact.json").read_text())["metrics"]
    assert ppo["world_size"] == 2 and ppo["rollouts_per_iteration"] == 16
    for step in ("dpo", "ppo", "grpo", "rloo", "eval"):
        ev = json.loads((pdir / step / "eval.json").read_text())
        assert 1 <= ev["n_prompts"] <= 4 and "kl" in ev
    if zero == "zero3":
        _check_evaluation_across_ranks(tmp_path, pdir)
    # The saved SFT policy is the trained model gathered whole: the trained tensors moved a little
    # from the pretrained start (4 steps), the others are bit-identical; none was lost, zeroed or
    # re-initialised. (LoRA: only the adapted projections change, merged.)
    from safetensors.torch import load_file

    start = load_file(assets / "models/stories260k/model.safetensors")
    saved = load_file(pdir / "sft/model/model.safetensors")
    assert set(saved) == set(start)
    for k, v in start.items():
        rel = float((saved[k] - v).abs().max() / v.abs().max())
        trained = "sft" not in lora or k.endswith("_proj.weight")
        assert (0 < rel < 0.2) if trained else rel == 0, (k, rel)


def _same_evaluation(a: dict, b: dict, keys) -> None:
    """Two evaluations of one policy on the same prompts and seeds: the same samples (same tokens, in
    the same order) and figures within 1e-3 (float differences only: a LoRA adapter merged on saving,
    a reward model scoring other batches; measured under ZeRO-3: 0 for a fully fine-tuned policy,
    up to 3e-5 nats per sample with LoRA, 1e-7 for reward scores)."""
    assert a["n_prompts"] == b["n_prompts"] and a["n_samples"] == b["n_samples"] == 2 * a["n_prompts"]
    assert a["per_sample"]["prompt_index"] == b["per_sample"]["prompt_index"]
    assert [r["policy"] for r in a["samples"]] == [r["policy"] for r in b["samples"]]
    assert [r["reference"] for r in a["samples"]] == [r["reference"] for r in b["samples"]]
    assert a["per_sample"]["kl"] == pytest.approx(b["per_sample"]["kl"], abs=1e-3)
    for k in keys:
        assert a[k] == pytest.approx(b[k], abs=1e-3), k


def _check_evaluation_across_ranks(tmp_path: Path, pdir: Path) -> None:
    """2-process ZeRO-3 DPO and PPO wrote `policy_eval/*` points at the steps asked, and their final
    evaluation (every rank its share, in lock-step, gathered) equals a one-process evaluation of the
    saved policy on the same prompts and seeds."""
    for step, steps in CURVE_STEPS.items():
        history = [json.loads(line) for line in (pdir / step / "history.jsonl").read_text().splitlines()]
        assert [h["step"] for h in history if "policy_eval/kl" in h] == steps, step
        names = ["policy_eval/rm_win_rate"] + (["policy_eval/gold_policy"] if step == "dpo" else ["policy_eval/proxy_policy"])
        assert all(n in h for h in history if "policy_eval/kl" in h for n in names), step
        art = json.loads((pdir / step / "artifact.json").read_text())
        assert [p["step"] for p in art["metrics"]["policy_eval_curve"]] == steps
    # the published DPO policy is the best point's: the final evaluation (same prompts and seeds as the
    # points) measures what that point measured, whether or not it is the last step
    dpo = json.loads((pdir / "dpo/artifact.json").read_text())
    best = dpo["extra"]["published"]["best"]
    assert dpo["extra"]["published"]["step"] in CURVE_STEPS["dpo"]
    final = json.loads((pdir / "dpo/eval.json").read_text())
    assert final["kl"] == pytest.approx(best["kl"], abs=1e-6) and final["gold_policy"] == pytest.approx(
        best["gold_policy"], abs=1e-6)
    figures = ["kl", "kl_per_token", "entropy_per_token", "reference_entropy_per_token", "policy_len",
               "gold_policy", "gold_reference", "gold_win_rate", "rm_policy", "rm_reference", "rm_win_rate"]
    # DPO: the pipeline's eval step evaluated the saved DPO policy on rank 0 alone, whole models
    _same_evaluation(json.loads((pdir / "dpo/eval.json").read_text()),
                     json.loads((pdir / "eval/eval.json").read_text()), figures)
    # PPO: one plain process evaluates the saved policy with the PPO step's evaluation settings
    ppo = json.loads((pdir / "ppo/eval.json").read_text())
    res = _run([str(BIN / "rlhf"), "stage=eval", "debug=smoke", f"model.init_from={pdir / 'ppo'}",
                "model.max_length=64", f"evaluation.reward_model={pdir / 'reward'}", "evaluation.max_prompts=4",
                "evaluation.generation.max_new_tokens=8", "evaluation.generation.batch_size=1",
                f"run_dir={tmp_path / 'ppo_eval'}", "logger=none"], tmp_path, _env(tmp_path / "runs_eval"))
    assert res.returncode == 0, res.log
    _same_evaluation(ppo, json.loads((tmp_path / "ppo_eval/eval.json").read_text()),
                     [k for k in figures if not k.startswith("gold")])
    # PPO's proxy (its reward model, partitioned by ZeRO-3, scoring in lock-step) = the same reward
    # model loaded whole by the evaluation
    assert ppo["per_sample"]["proxy_policy"] == pytest.approx(ppo["per_sample"]["rm_policy"], abs=1e-3)


def test_torchrun_two_nodes_one_process_each(tmp_path):
    """2 "nodes" x 1 process meeting at a c10d rendezvous on localhost; ZeRO-3 SFT, one run dir."""
    runs = tmp_path / "runs"
    env = _env(runs)
    port = _port()
    args = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d",
            "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "rlhf-test", str(BIN / "rlhf"),
            "stage=sft", "debug=smoke", "deepspeed=zero3", "logger=none", "trainer.eval_strategy=no"]
    logs = [tmp_path / f"node{i}.log" for i in range(2)]  # files, not pipes: a full pipe would block a node
    nodes = []
    for log in logs:
        with open(log, "w") as f:
            nodes.append(subprocess.Popen([str(BIN / "torchrun"), *args], cwd=tmp_path, env=env, stdout=f,
                                          stderr=subprocess.STDOUT))
    try:
        codes = [n.wait(timeout=600) for n in nodes]
    finally:
        for n in nodes:
            n.kill() if n.poll() is None else None
    assert codes == [0, 0], "\n".join(log.read_text()[-5000:] for log in logs)
    dirs = [p for p in (runs / "default/sft").iterdir()]
    assert len(dirs) == 1, dirs  # both "nodes" agreed on rank 0's timestamped directory
    assert (dirs[0] / "artifact.json").is_file()
    _check_loadable(dirs[0], "policy")


def test_accelerate_launch(tmp_path):
    runs = tmp_path / "runs"
    cmd = [str(BIN / "accelerate"), "launch", "--num_processes", "2", "--num_machines", "1", "--use_deepspeed",
           "--main_process_port", str(_port()), str(BIN / "rlhf"), "stage=reward", "debug=smoke", "deepspeed=zero2",
           "logger=none", "model.max_length=64"]
    res = _run(cmd, tmp_path, _env(runs))
    assert res.returncode == 0, res.log
    dirs = list((runs / "default/reward").iterdir())
    assert len(dirs) == 1 and (dirs[0] / "artifact.json").is_file(), dirs
    art = json.loads((dirs[0] / "artifact.json").read_text())
    assert art["kind"] == "reward" and art["metrics"]["eval_accuracy"] is not None
    _check_loadable(dirs[0], "reward")


def test_ppo_data_parallel_without_deepspeed(tmp_path):
    """torchrun, 2 processes, no deepspeed=: our PPO averages gradients by all-reduce, each rank rolls
    out its own prompts, the two ranks keep one β; one run dir with the one-process layout. The KL
    controller counts the samples of the whole job (Ziegler et al.'s horizon): with a target far above
    the KL it shrinks β by the same factor as a one-process run of the same global batch."""
    runs, env = tmp_path / "runs", _env(tmp_path / "runs")
    for args in (["debug=smoke", f"run_dir={tmp_path / 'sft'}", "trainer.eval_strategy=no"],
                 ["stage=reward", "debug=smoke", f"model.init_from={tmp_path / 'sft'}", "model.max_length=64",
                  f"run_dir={tmp_path / 'rm'}", "trainer.eval_strategy=no"]):
        res = _run([str(BIN / "rlhf"), *args, "logger=none"], tmp_path, env)
        assert res.returncode == 0, res.log
    ppo = ["stage=ppo", "debug=smoke", f"model.init_from={tmp_path / 'sft'}", f"stage.reward_model={tmp_path / 'rm'}",
           "model.max_length=64", "evaluation.max_prompts=4", "evaluation.generation.max_new_tokens=8", "logger=none",
           "trainer.kl_target=1000", "trainer.kl_horizon=100", "trainer.kl_coef=0.1"]
    res = _run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_port()), str(BIN / "rlhf"),
                *ppo], tmp_path, env)
    assert res.returncode == 0, res.log
    one = _run([str(BIN / "rlhf"), *ppo, "trainer.rollout_batch_size=16", f"run_dir={tmp_path / 'one'}"], tmp_path, env)
    assert one.returncode == 0, one.log
    beta_one = json.loads((tmp_path / "one/ppo_history.json").read_text())[1]["kl_coef"]
    assert beta_one == pytest.approx(0.1 * (1 - 0.2 * 16 / 100))
    dirs = list((runs / "default/ppo").iterdir())
    assert len(dirs) == 1, dirs
    art = json.loads((dirs[0] / "artifact.json").read_text())
    assert art["metrics"]["world_size"] == 2 and art["metrics"]["rollouts_per_iteration"] == 16
    history = json.loads((dirs[0] / "ppo_history.json").read_text())
    assert len(history) == 2 and history[1]["policy/approxkl"] > 0  # the policy moved between rollouts
    assert history[1]["kl_coef"] == pytest.approx(beta_one)  # 2 ranks x 8 rollouts = 1 rank x 16
    _check_loadable(dirs[0], "policy")
    _check_loadable(dirs[0] / "value", "value")
