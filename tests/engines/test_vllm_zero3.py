"""generation=vllm under DeepSpeed ZeRO-3, through the `rlhf` CLI in its own process (the world of one
`rlhf deepspeed=zero3` sets up, with vLLM's engine joining it): our PPO, fully fine-tuned and with
LoRA, whose engine takes the gathered policy at every iteration (its sampling log-probs are the
ZeRO-3 policy's own), each module gathered once per sync, not per token; the final evaluation samples
with the same engine, and the engine is shut down before the process group (no error at exit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test` runs these in .venv-vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

from .conftest import VLLM_OVERRIDES  # noqa: E402

QUIET = ["logger=none", "debug=smoke", "evaluation.max_prompts=4", "evaluation.generation.max_new_tokens=8",
         "evaluation.judge=vader", "model.add_bos=false", "model.max_length=128"]


def _rlhf(tmp_path: Path, *overrides: str, prog: list[str] | None = None) -> subprocess.CompletedProcess:
    """`rlhf ...` (or `prog ...`, e.g. a launcher) run by this venv's Python, in its own process."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(RLHF_RUNS_DIR=str(tmp_path / "runs"), WANDB_MODE="offline", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false",
               # DeepSpeed JIT-builds a CPU op on CPU: this venv's own build, not rebuilt whenever another venv
               # (whose paths differ) has built it into the shared default folder
               TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions")))
    return subprocess.run([sys.executable, *(prog or ["-m", "rlhf"]), *overrides], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)


def _modules_with_weights(model_dir: Path) -> int:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return sum(1 for m in model.modules() if any(True for _ in m.parameters(recurse=False)))


@pytest.mark.parametrize("peft", ["none", "lora"])
def test_zero3_ppo_samples_with_the_gathered_policy_once_per_sync(llama64, tmp_path, peft):
    r = _rlhf(tmp_path, "stage=ppo", *QUIET, *VLLM_OVERRIDES, f"model.name_or_path={llama64}", "stage.judge=vader",
              "stage.value_from=policy", "deepspeed=zero3", f"peft={peft}", "trainer.learning_rate=1e-3",
              f"evaluation.enabled={peft == 'none'}")
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Traceback" not in r.stderr, r.stderr[-4000:]  # vLLM's groups went before the process group
    run_dir = next((tmp_path / "runs").rglob("ppo_history.json")).parent
    history = json.loads((run_dir / "ppo_history.json").read_text())
    modules = _modules_with_weights(llama64)  # a LoRA layer is gathered with its base layer: the same count
    assert len(history) == 2
    for i, h in enumerate(history, 1):
        assert h["generation/weight_syncs"] == i  # one load per rollout, after the optimizer steps
        assert h["generation/zero3_gathers"] == i * modules  # each module once per sync: none while sampling
        # the engine holds the gathered policy: its log-probs are the ZeRO-3 trainer's own (stale: ~1e-1)
        assert h["rollout/logprob_diff_max"] < 1e-4, h
    assert history[1]["objective/kl"] != 0  # the policy moved after iteration 1: the second sync carried it
    artifact = json.loads((run_dir / "artifact.json").read_text())
    if peft == "none":  # the final evaluation (in memory, the trainer's policy) sampled with the same engine
        assert "kl" in artifact["metrics"]["policy_eval"] and (run_dir / "eval.json").is_file()
        # one engine, reused: our own log line (TRL, once imported in the test process, sets
        # VLLM_LOGGING_LEVEL=ERROR, which the child inherits: vLLM's own lines may not be printed)
        assert (r.stdout + r.stderr).count("vLLM engine: ") == 1


def test_two_ranks_each_sample_with_their_own_engine_under_zero3(llama64, tmp_path):
    """2 CPU ranks (the deepspeed launcher, gloo): each rank starts its own engine in the launcher's
    process group (vLLM's external_launcher) and samples its prompts; both gather at every sync."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = Path(sys.executable).parent / "deepspeed"
    r = _rlhf(tmp_path, "--num_gpus", "2", "--master_port", str(port), str(Path(sys.executable).parent / "rlhf"),
              "stage=ppo", *QUIET, *VLLM_OVERRIDES, f"model.name_or_path={llama64}", "stage.judge=vader",
              "stage.value_from=policy", "deepspeed=zero3", "trainer.learning_rate=1e-3", prog=[str(launcher)])
    assert r.returncode == 0, r.stderr[-4000:]
    run_dir = next((tmp_path / "runs").rglob("ppo_history.json")).parent
    history = json.loads((run_dir / "ppo_history.json").read_text())
    modules = _modules_with_weights(llama64)
    for i, h in enumerate(history, 1):  # means over the 2 ranks: every rank synced and gathered alike
        assert h["generation/weight_syncs"] == i and h["generation/zero3_gathers"] == i * modules
        assert h["rollout/logprob_diff_max"] < 1e-4, h
    metrics = json.loads((run_dir / "artifact.json").read_text())["metrics"]
    assert metrics["world_size"] == 2 and "kl" in metrics["policy_eval"]
