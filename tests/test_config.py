"""Every YAML under conf/ composes; validation catches mistakes before anything heavy is built."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhf.errors import UserError
from rlhf.stages import STAGES

CONF = Path(__file__).resolve().parents[1] / "conf"
# Groups whose options are picked on the command line as `group=option`.
GROUP_DIRS = ["stage", "model", "data", "trainer", "peft", "logger", "experiment", "debug", "paths", "pipeline",
              "deepspeed", "generation", "monitor"]


def _all_options():
    opts = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if rel.parts[0] in GROUP_DIRS:
            opts.append(f"{'/'.join(rel.parts[:-1])}={path.stem}")
    return opts


# Hydra's own groups with presets of ours (a SLURM launcher): `hydra/launcher=slurm`.
HYDRA_GROUP_DIRS = ["hydra/launcher", "hydra/sweeper"]


def _hydra_options():
    return [f"{d}={p.stem}" for d in HYDRA_GROUP_DIRS for p in sorted((CONF / d).glob("*.yaml"))]


def test_every_yaml_is_covered():
    files = list(CONF.rglob("*.yaml"))
    covered = _all_options() + _hydra_options()
    # config.yaml + hydra/job_logging/rlhf.yaml are composed by every case below; debug_trainer/ by
    # test_smoke_composes_for_every_stage.
    n_debug_trainer = len(list((CONF / "debug_trainer").glob("*.yaml")))
    assert len(files) >= 20 and len(covered) == len(files) - 2 - n_debug_trainer, (len(files), len(covered))


@pytest.mark.parametrize("option", _hydra_options())
def test_hydra_preset_composes(compose, option):
    from hydra.utils import get_class

    cfg = compose(option, return_hydra_config=True)
    group = option.split("=")[0].split("/")[1]
    get_class(cfg.hydra[group]._target_)  # the plugin is installed and its class importable


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_smoke_composes_for_every_stage(compose, stage):
    from rlhf.runner import validate
    from rlhf.stages import stage_module

    rewards = {"ppo": ["stage.judge=vader", "stage.value_from=policy"], "grpo": ["stage.reward_funcs=[vader]"],
               "rloo": ["stage.reward_funcs=[vader]"]}
    cfg = compose(f"stage={stage}", "debug=smoke", *rewards.get(stage, []))
    assert cfg.data.max_rows == 64
    if stage_module(stage).TRAINER or stage in ("grpo", "rloo"):
        validate(cfg)  # every smoke key is an option of the stage's trainer
        steps = cfg.trainer.get("max_steps", cfg.trainer.get("total_iterations"))
        assert 0 < steps <= 4
    assert compose(f"stage={stage}").trainer.get("max_steps", -1) in (-1, None)


@pytest.mark.parametrize("option", _all_options())
def test_option_composes_and_resolves(compose, option):
    cfg = compose(option)
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert container["stage"]["name"] in STAGES
    assert Path(container["assets_dir"]).is_dir()


def test_stage_picks_its_trainer_and_data(compose):
    cfg = compose("stage=reward")
    assert cfg.data.kind == "pair" and "center_rewards_coefficient" in cfg.trainer
    cfg = compose("stage=reward", "data=oasst")
    assert cfg.data.kind == "ranked" and cfg.trainer.learning_rate == 5e-5


def test_assets_dir_env_override(compose, monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_ASSETS_DIR", str(tmp_path))
    assert compose().model.name_or_path == f"{tmp_path}/models/stories260k"


def test_unknown_trainer_key_says_did_you_mean(compose):
    from rlhf.runner import validate

    cfg = compose("+trainer.learning_rat=0.1", "+trainer.warmup_ratioo=0.1")
    with pytest.raises(UserError) as e:
        validate(cfg)
    msg = e.value.message
    assert "trainer.learning_rat" in msg and "did you mean `learning_rate`" in msg
    assert "trainer.warmup_ratioo" in msg


def test_trainer_config_defaults_to_cpu_without_gpu(compose):
    from trl import SFTConfig

    from rlhf.stages.common import build_trainer_config

    args = build_trainer_config(SFTConfig, compose().trainer, output_dir="/tmp/x")
    assert args.use_cpu and not args.bf16 and not args.gradient_checkpointing


def test_qlora_refused_where_a_4bit_layer_cannot_run():
    from rlhf.quantization import qlora_problem

    assert qlora_problem() is None  # this machine's device (the CPU here): bitsandbytes runs NF4 on it
    problem = qlora_problem("meta")  # a device bitsandbytes has no kernels for
    assert problem and "cannot run a 4-bit layer on meta" in problem and "rlhf-align[qlora]" in problem


def test_qlora_under_zero3_on_cpu_is_one_clear_error_and_zero2_is_not(compose):
    """ZeRO-3 partitions bitsandbytes' 4-bit parameters: DeepSpeed handles that on GPUs only (with
    bnb_4bit_quant_storage); ZeRO-2 shards nothing the frozen 4-bit base has."""
    import torch

    from rlhf.runner import validate

    if torch.cuda.is_available():
        pytest.skip("the CPU refusal")
    with pytest.raises(UserError) as e:
        validate(compose("stage=sft", "debug=smoke", "peft=qlora", "deepspeed=zero3"))
    assert len(e.value.problems) == 1, e.value.problems
    msg = e.value.problems[0]
    assert "peft=qlora with deepspeed ZeRO-3" in msg and "GPU-only" in msg and "bnb_4bit_quant_storage" in msg
    assert "deepspeed=zero2" in msg
    validate(compose("stage=sft", "debug=smoke", "peft=qlora", "deepspeed=zero2"))


def test_missing_mandatory_and_wrong_kind_listed_together(compose):
    from rlhf.runner import validate

    with pytest.raises(UserError) as e:
        validate(compose("data=jsonl", "stage=reward", "logger.report_to=mlflow"))
    msg = e.value.message
    assert "data.kind: a value is required" in msg and "data.source: a value is required" in msg
    assert "logger.report_to" in msg


def test_cfg_job_does_not_import_heavy_libraries():
    code = (
        "import sys\nsys.argv=['rlhf','--cfg','job']\nimport rlhf.cli as c\n"
        "try:\n    c.main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted({m.split('.')[0] for m in sys.modules} & {'torch','trl','deepspeed','transformers','wandb'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "stage:" in out.stdout and "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_cli_bad_override_exits_2_without_traceback(cli):
    res = cli("model=nope")
    assert res.returncode == 2
    assert "Could not find 'model/nope'" in res.stderr + res.stdout
    assert "Traceback" not in res.stderr


def test_cli_qlora_refusal_names_what_to_install(tmp_path):
    """Without bitsandbytes (its import blocked the standard way: None in sys.modules, so
    importlib.util.find_spec answers None as for a package that is not installed), the real CLI
    exits 2 with one message naming what to install, and leaves no run directory."""
    code = ("import sys\nsys.modules['bitsandbytes'] = None\nsys.argv = ['rlhf', 'peft=qlora']\n"
            "from rlhf.cli import main\nmain()\n")
    env = {**os.environ, "RLHF_RUNS_DIR": str(tmp_path / "runs"), "WANDB_MODE": "offline"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert res.returncode == 2, res.stderr
    assert "rlhf: error:" in res.stderr and "4-bit QLoRA cannot run here: bitsandbytes is not installed" in res.stderr
    assert "rlhf-align[qlora]" in res.stderr and "Traceback" not in res.stderr
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(p.is_file() for p in runs.rglob("*"))


def test_deepspeed_local_rank_argument_is_accepted(monkeypatch):
    from rlhf.cli import _rewrite_argv

    # _rewrite_argv exports LOCAL_RANK as the launcher meant; monkeypatch restores the
    # environment so later tests' subprocesses do not believe they are rank 1 of a job.
    monkeypatch.setenv("LOCAL_RANK", "")  # recorded, so undo removes it (delenv of an absent name records nothing)
    monkeypatch.delenv("LOCAL_RANK")
    assert _rewrite_argv(["--local_rank=1", "stage=sft"]) == ["stage=sft"]
    assert os.environ["LOCAL_RANK"] == "1"
    assert _rewrite_argv(["check", "data=oasst"]) == ["mode=check", "data=oasst"]


@pytest.mark.parametrize(("overrides", "expected"), [
    (["trainer.learning_rate=abc"], "trainer.learning_rate: expected a number, got 'abc'"),
    (["trainer.learning_rate=-1"], "trainer.learning_rate: must be > 0, got -1"),
    (["trainer.per_device_train_batch_size=-4"], "trainer.per_device_train_batch_size: must be >= 1, got -4"),
    (["trainer.max_steps=0"], "trainer.max_steps: must be -1"),
    (["stage=ppo", "stage.judge=vader", "stage.value_from=policy", "trainer.total_iterations=0"],
     "trainer.total_iterations: must be >= 1, got 0"),
    (["stage=ppo", "stage.judge=vader", "stage.value_from=policy", "trainer.rollout_batch_size=10"],
     "trainer.rollout_batch_size: 10 must be a multiple of trainer.mini_batch_size (16)"),
    (["deepspeed=zero3", "deepspeed.zero_optimization.reduce_bucket_size=-1"],
     "deepspeed.zero_optimization.reduce_bucket_size: expected a number >= 0 or auto, got -1"),
    (["model.max_length=1"], "model.max_length: must be >= 2, got 1"),
    (["model.dtype=float8"], "model.dtype: 'float8' (str) is not one of float32"),
    (["stage.batching=grupped"], "stage.batching: 'grupped' (str) is not one of grouped, padded, packed, wrapped "
                                 "(did you mean `grouped`?)"),
    (["+stage.eval_befor=false"], "stage.eval_befor: unknown option (did you mean `eval_before`?)"),
    (["evaluation.generation.temperature=0"], "evaluation.generation.temperature: must be > 0, got 0"),
    (["trainer.max_length=64"], "trainer.max_length: 64 disagrees with model.max_length=512"),
    (["stage=dpo", "trainer.beta=0"], "trainer.beta: must be > 0"),
    (["peft=lora", "+peft.lora.init={_target_: shutil.copy}"], "peft.lora.init._target_: nested instantiation"),
])
def test_bad_values_are_refused_at_validation_with_the_option_name(compose, overrides, expected):
    from rlhf.runner import validate

    with pytest.raises(UserError) as e:
        validate(compose(*overrides))
    assert expected in e.value.message, e.value.message


def test_one_resolver_for_judges_in_every_stage(compose):
    from rlhf.runner import validate

    validate(compose("stage=generate", "stage.judge=vader"))  # the name works where PPO takes it too
    validate(compose("stage=generate", "stage.judge=rlhf.judges.vader"))
    with pytest.raises(UserError, match="stage.judge: unknown judge / reward function 'vadr'.*did you mean `vader`"):
        validate(compose("stage=ppo", "stage.judge=vadr", "stage.value_from=policy"))
