"""What the reliability suite (tests/reliability) and its report (bench/reliability.py) share: the
real `rlhf` entry point run in this process or as a process to kill, directory snapshots, the
artifacts the cases start from, and ways to damage them.

In-process runs go through `rlhf.cli.main` exactly as the console script does (Hydra composition,
run dir, exit code), minus the ~7 s of imports a fresh process pays, so a corpus of ~100 bad
inputs stays fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ASSETS = Path(os.environ.get("RLHF_ASSETS_DIR", ROOT.parent / "shared" / "assets")).resolve()
CASES = Path(os.environ.get("RLHF_CASES_DIR", ASSETS.parent / "cases")).resolve() / "reliability"
QUIET = ["logger=none", "debug=smoke"]


@dataclass
class Outcome:
    code: int
    stderr: str
    stdout: str

    @property
    def message(self) -> str:
        """The `rlhf: error:` message (or the last line of stderr)."""
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        first = next((i for i, ln in enumerate(lines) if "rlhf: error:" in ln), None)
        if first is None:
            return lines[-1] if lines else ""
        return "\n".join([lines[first][lines[first].index("rlhf: error:"):], *lines[first + 1:]])

    @property
    def traceback(self) -> bool:
        """A crash rather than a refusal: exit 1 (Hydra's for an uncaught error) or a printed traceback."""
        return self.code not in (0, 2) or "Traceback (most recent call last)" in self.stderr


def _env(runs_dir: Path) -> dict[str, str]:
    return {"RLHF_RUNS_DIR": str(runs_dir), "RLHF_ASSETS_DIR": str(ASSETS), "WANDB_MODE": "offline",
            "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "HYDRA_FULL_ERROR": "0"}


def run_inprocess(args: list[str], runs_dir: Path) -> Outcome:
    """`rlhf <args>` in this process: exit code, stderr, stdout. An exception that escapes is a traceback."""
    from hydra.core.global_hydra import GlobalHydra

    from rlhf import cli

    saved_env = {k: os.environ.get(k) for k in (*_env(runs_dir), *PROCESS_GROUP_ENV)}
    saved_argv, err, out = sys.argv, io.StringIO(), io.StringIO()
    os.environ.update(_env(runs_dir))
    os.environ.pop("WANDB_API_KEY", None)
    sys.argv = ["rlhf", *args]
    cli._task_started = False
    code = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the console script would print as a traceback
        code = 1
        err.write(traceback.format_exc())
    finally:
        sys.argv = saved_argv
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        GlobalHydra.instance().clear()
        _drop_file_logs()
        _end_process_group()
    return Outcome(code, err.getvalue(), out.getvalue())


PROCESS_GROUP_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _end_process_group() -> None:
    """A `deepspeed=` run makes a world of one in this process (and a live ZeRO config for
    transformers); a run that crashed leaves both behind. The next run must start without them."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def _drop_file_logs() -> None:
    """Hydra points a file handler at the last run's rlhf.log: detach it, so later logging in this
    process never writes into a finished run."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler):
            root.removeHandler(h)
            h.close()


def rlhf_exe() -> str:
    return str(Path(sys.executable).parent / "rlhf")


def launch(args: list[str], runs_dir: Path, log: Path) -> subprocess.Popen:
    """`rlhf <args>` as a separate process (its output to `log`): one that can be killed."""
    env = {**os.environ, **_env(runs_dir)}
    env.pop("WANDB_API_KEY", None)
    with open(log, "wb") as f:
        return subprocess.Popen([rlhf_exe(), *args], stdout=f, stderr=subprocess.STDOUT, env=env, cwd=runs_dir.parent)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300.0, poll: float = 0.005) -> bool:
    """SIGKILL `proc` the moment `ready()` is true; False when the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    proc.kill()
    proc.wait()
    raise TimeoutError("the run never reached the point to kill it at")


def snapshot(root: Path) -> dict[str, str]:
    """Every file (sha256) and folder ("<dir>") under `root`, by relative path."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def written(before: dict[str, str], after: dict[str, str], runs: str = "runs") -> list[str]:
    """Paths created, changed or removed between two snapshots; the parents Hydra makes for a run
    (`runs/<experiment>/<stage>`) do not count, the run directory itself does."""
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return [k for k in changed if not (after.get(k) == "<dir>" and k.startswith(runs) and k.count("/") <= 2)]


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def max_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between the tensors of two model folders (inf if they differ in shape)."""
    wa, wb = weights(a), weights(b)
    if wa.keys() != wb.keys():
        return float("inf")
    diff = 0.0
    for k in wa:
        if wa[k].shape != wb[k].shape:
            return float("inf")
        diff = max(diff, float((wa[k].double() - wb[k].double()).abs().max()) if wa[k].numel() else 0.0)
    return diff


# ---- the artifacts the cases start from ------------------------------------------------------------
def build_sft(run_dir: Path, runs_dir: Path) -> Path:
    out = run_inprocess([*QUIET, "trainer.eval_strategy=no", "stage.eval_before=false", "trainer.max_steps=2",
                         f"run_dir={run_dir}"], runs_dir)
    assert out.code == 0, out.stderr[-3000:]
    return run_dir


def build_rm(run_dir: Path, sft: Path, runs_dir: Path) -> Path:
    out = run_inprocess([*QUIET, "stage=reward", f"model.init_from={sft}", "model.max_length=128",
                         "trainer.eval_strategy=no", "trainer.max_steps=2", f"run_dir={run_dir}"], runs_dir)
    assert out.code == 0, out.stderr[-3000:]
    return run_dir


def build_foreign_rm(run_dir: Path) -> Path:
    """A reward artifact whose model reads GPT-2 token ids (50,257 of them): a small Llama-shaped
    sequence classifier on the GPT-2 vocabulary of the shared assets, with its manifest."""
    import torch
    from transformers import GPT2TokenizerFast, LlamaConfig, LlamaForSequenceClassification

    from rlhf.run.artifacts import Artifact, RunDir, write_artifact

    tok_dir = ASSETS / "tokenizers" / "gpt2"
    tok = GPT2TokenizerFast(vocab_file=str(tok_dir / "vocab.json"), merges_file=str(tok_dir / "merges.txt"))
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, num_labels=1, pad_token_id=tok.eos_token_id))
    with RunDir(run_dir):
        model.save_pretrained(run_dir / "model")
        tok.save_pretrained(run_dir / "model")
        write_artifact(run_dir, Artifact(stage="reward", kind="reward", model_dir="model", tokenizer_dir="model",
                                         base_model="gpt2-vocabulary llama"))
    return run_dir


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".rlhf.lock"))
    return dst


def poison(model_dir: Path, value: float = float("nan")) -> None:
    """Set every element of the first floating tensor of `model_dir`'s weights to `value`."""
    from safetensors.torch import load_file, save_file

    f = sorted(Path(model_dir).glob("*.safetensors"))[0]
    state = load_file(f)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone().fill_(value)
    save_file(state, f, metadata={"format": "pt"})


def edit_json(path: Path, fn) -> None:
    path.write_text(json.dumps(fn(json.loads(path.read_text()))))
