"""Sweeps and clusters: the SLURM launcher preset, the objective a sweep optimises, the memory
preflight of `rlhf check`, and a real submitit job running the Hydra task in a fresh process.

The Optuna sweep over DPO (experiment=demo_dpo_optuna) runs in tests/test_pipeline.py, on the
artifacts that test's demo pipeline builds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhf.cli import sweep_objective
from rlhf.errors import UserError
from rlhf.memory import ModelSize, ZeroSetup, estimate, per_process, zero_setup
from rlhf.run.artifacts import Artifact
from rlhf.stages import stage_module

CONF = Path(__file__).resolve().parents[1] / "conf"



def test_slurm_launcher_preset_makes_a_valid_sbatch_script(compose, tmp_path, monkeypatch):
    """The preset's keys are real submitit/sbatch parameters: build the batch script submitit would submit."""
    import os

    import submitit

    fake_bin = tmp_path / "bin"  # submitit refuses to build a SLURM executor where `srun` is not on PATH
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = compose("hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}",
                  "hydra.job.name=rlhf", return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    params = dict(launcher.params)
    # what the launcher does before submitting (hydra_submitit_launcher.submitit_launcher.launch)
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m rlhf", "0")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=240",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --mem=64GB", "#SBATCH --job-name=rlhf"):
        assert line in script, script


def test_optuna_preset_optimises_a_metric_of_the_dpo_run(compose):
    cfg = compose("experiment=demo_dpo_optuna", return_hydra_config=True)
    assert cfg.stage.name == "dpo" and cfg.sweep_objective == "policy_eval.gold_policy"
    sweeper = cfg.hydra.sweeper
    assert "Optuna" in sweeper._target_ and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"trainer.beta", "trainer.learning_rate"}


def test_sweep_objective_reads_a_dotted_path_of_the_run_metrics():
    art = Artifact(stage="dpo", kind="policy", model_dir="model", base_model="m", tokenizer_dir="model",
                   metrics={"beta": 0.5, "policy_eval": {"gold_policy": 0.81, "kl": 3.2}})
    assert sweep_objective(art, "policy_eval.gold_policy") == 0.81
    assert sweep_objective({"dpo": {"policy_eval": {"kl": 3}}}, "dpo.policy_eval.kl") == 3.0  # a pipeline
    assert sweep_objective(art, None) is None
    with pytest.raises(UserError) as e:
        sweep_objective(art, "policy_eval.gold_win")
    assert "policy_eval has gold_policy, kl" in e.value.message
    with pytest.raises(UserError, match="not a number"):
        sweep_objective(art, "policy_eval")


def test_optuna_sweep_without_an_objective_is_refused_before_training(cli, tmp_path):
    res = cli("-m", "experiment=demo_dpo_optuna", "sweep_objective=null", "hydra.sweeper.n_trials=1",
              f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "sweep_objective: the Optuna sweeper needs" in res.stderr and "Traceback" not in res.stderr


def test_bad_launch_settings_are_listed_together(compose):
    from rlhf.runner import validate

    with pytest.raises(UserError) as e:
        validate(compose("launch.world_size=0", "launch.gpu_memory_gb=-8", "sweep_objective=3"))
    msg = e.value.message
    assert "launch.world_size" in msg and "launch.gpu_memory_gb" in msg and "sweep_objective" in msg


def test_zero_setup_reads_stage_and_offload_from_a_deepspeed_config():
    assert zero_setup(None) == ZeroSetup(0, False, False)
    ds = {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}}}
    assert zero_setup(OmegaConf.create(ds)) == ZeroSetup(3, True, True)
    assert zero_setup({"config": {"zero_optimization": {"stage": 2}}}) == ZeroSetup(2, False, False)
    # offload_param only exists at stage 3
    assert zero_setup({"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}}).offload_param is False
    with pytest.raises(UserError, match="stage"):
        zero_setup({"zero_optimization": {"stage": 4}})


def test_per_process_memory_follows_the_zero_paper():
    # 1B params in bf16 with Adam: 2 + 2 + 12 bytes per param on one GPU (the ZeRO paper's 16 Psi)
    size = ModelSize("m", "X", params=10**9, trainable=10**9, largest_layer=10**8, weight_bytes=2.0)
    one = per_process(size, ZeroSetup(0, False, False), 1, reference=False)
    assert one["gpu_bytes"] == 16 * 10**9
    z1, z2, z3 = (per_process(size, ZeroSetup(s, False, False), 8, reference=False)["gpu_bytes"] for s in (1, 2, 3))
    assert z1 == (2 + 2 + 12 / 8) * 10**9 and z2 == (2 + 14 / 8) * 10**9 and z3 == 2 * 10**9
    off = per_process(size, ZeroSetup(3, True, True), 8, reference=True)
    assert off["gpu"] == {"grads": 2 * 10**9 // 8} and off["cpu"]["optimizer"] == 12 * 10**9 // 8
    dpo_holds_a_reference = stage_module("dpo").FACTS.reference
    est = estimate(size, ZeroSetup(3, False, False), 8, dpo_holds_a_reference, "none", gpu_memory_bytes=2 * 10**9)
    assert est["reference_model"] and est["fits"] is False  # 2.25 GB of states > 2 GB
    assert est["chosen"]["deepspeed"]["gpu_bytes"] > 0       # DeepSpeed's own estimator, for comparison


def _check(cli, tmp_path, *overrides):
    out = tmp_path / "check.json"
    res = cli("check", "data.max_rows=50", f"check_out={out}", *overrides)
    assert res.returncode == 0, res.stderr[-2000:]
    return res, json.loads(out.read_text())["memory"]


def test_rlhf_check_reports_memory_per_process(cli, tmp_path):
    res, mem = _check(cli, tmp_path, "launch.world_size=2", "launch.gpu_memory_gb=0.001")
    assert mem["model"]["params"] == 260_032  # stories260k, tied embeddings counted once
    grid = {(g["stage"], g["world_size"]): g["gpu_bytes"] for g in mem["grid"]}
    assert grid[(3, 2)] < grid[(3, 1)] and grid[(3, 8)] < grid[(3, 2)]
    assert grid[(0, 2)] == grid[(0, 1)]  # plain data parallel: every process holds everything
    assert mem["chosen"]["world_size"] == 2 and mem["setup"] == "no ZeRO"
    assert mem["fits"] is False  # ~4 MiB of model states do not fit in 1 MiB
    assert "memory preflight" in res.stdout and "does NOT fit" in res.stdout


def test_rlhf_check_reads_the_chosen_deepspeed_preset(cli, tmp_path):
    _, one = _check(cli, tmp_path, "deepspeed=zero3", "launch.world_size=1")
    _, two = _check(cli, tmp_path, "deepspeed=zero3", "launch.world_size=2")
    assert one["chosen"]["stage"] == two["chosen"]["stage"] == 3
    assert two["chosen"]["gpu_bytes"] < one["chosen"]["gpu_bytes"]


def test_submitit_job_runs_the_task_in_a_fresh_process_and_returns_the_objective(cli, tmp_path):
    """hydra/launcher=submitit_local: the task is pickled into new processes (as on SLURM) and the
    sweeper reads what each job returns. A check leaves no job directory behind; that removal must
    not break the job's later logging (it did: submitit logs after the task, into the removed dir)."""
    import yaml

    sweep = tmp_path / "sweep"
    res = cli("-m", "hydra/launcher=submitit_local", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
              "hydra.sweeper.direction=minimize", "hydra.sweeper.sampler.seed=0", "hydra.sweeper.n_jobs=2",
              "launch.world_size=choice(1,8)", "mode=check", "data.max_rows=50",
              "sweep_objective=memory.chosen.gpu_bytes", f"hydra.sweep.dir={sweep}", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == 260_032 * 16  # stories260k in fp32, no ZeRO: 4 + 4 + 8 bytes per param
