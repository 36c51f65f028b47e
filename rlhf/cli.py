"""`rlhf`: the Hydra entry point. Compose -> validate -> run one stage (or `rlhf check` the data).

Heavy libraries (torch, transformers, trl, deepspeed) are imported only inside the stage that
needs them, so `rlhf --help` and `rlhf --cfg job` stay fast.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .errors import UserError
from .resources import CONFIG_PATH, assets_fallback, package_root, pkg_dir

log = logging.getLogger("rlhf")

SUBCOMMANDS = {"check": "mode=check"}


def register_resolvers() -> None:
    # Paths that hold installed or not (rlhf/resources.py): no resolver assumes the repo layout.
    OmegaConf.register_new_resolver("rlhf_root", lambda: str(package_root()), replace=True)
    OmegaConf.register_new_resolver("assets_fallback", assets_fallback, replace=True)
    OmegaConf.register_new_resolver("pkg_dir", pkg_dir, replace=True)
    # Arithmetic for presets that derive one knob from another (e.g. the demo's `leash`).
    OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b), replace=True)
    OmegaConf.register_new_resolver("div", lambda a, b: float(a) / float(b), replace=True)
    OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)
    # Our PPO's defaults live in one place, PPOConfig: conf/trainer/ppo.yaml starts from this node.
    import dataclasses

    from hydra.core.config_store import ConfigStore

    from .ppo.config import PPOConfig

    defaults = {k: v for k, v in dataclasses.asdict(PPOConfig()).items() if k != "seed"}  # the root seed decides
    ConfigStore.instance().store(group="trainer", name="ppo_defaults", node=defaults)


def sweep_group(experiment_name: str) -> str:
    """The W&B group of a run: its experiment, and for a sweep member `<experiment>/<sweep dir name>`,
    so the members of one sweep sit together and apart from earlier sweeps of the same experiment."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return str(experiment_name)
    return f"{experiment_name}/{Path(HydraConfig.get().sweep.dir).name}"


def sweep_objective(result, path: str | None) -> float | None:
    """The number a sweeper optimises: `path` (dotted) into what the run returned, e.g.
    `policy_eval.gold_policy` into a stage's artifact metrics, or `dpo.policy_eval.kl` into a pipeline's."""
    if not path:
        return None
    node = getattr(result, "metrics", result)
    for i, key in enumerate(path.split(".")):
        if not isinstance(node, dict) or key not in node:
            keys = sorted(node) if isinstance(node, dict) else []
            where = ".".join(path.split(".")[:i]) or "the run's metrics"
            raise UserError(f"sweep_objective: {path!r} is not in what this run produced: {where} has "
                            f"{', '.join(map(str, keys)) or 'no keys'}")
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, int | float):
        raise UserError(f"sweep_objective: {path!r} is {node!r}, not a number")
    return float(node)


def _rewrite_argv(argv: list[str]) -> list[str]:
    """`rlhf check a=b` -> `rlhf mode=check a=b`; drop the deepspeed launcher's --local_rank=N."""
    out = []
    for i, arg in enumerate(argv):
        if i == 0 and arg in SUBCOMMANDS:
            out.append(SUBCOMMANDS[arg])
        elif arg.startswith("--local_rank=") or arg.startswith("--local-rank="):
            os.environ.setdefault("LOCAL_RANK", arg.split("=", 1)[1])
        else:
            out.append(arg)
    return out


_task_started = False
_held = None  # rlhf.cmdline.HeldStderr while Hydra composes: its refusals become one line


def run(cfg: DictConfig, run_dir: str | Path | None = None):
    """What the config asks for: a pipeline (every step validated before the first trains), or one
    stage / `check` (rlhf.runner). Raises UserError for user mistakes."""
    if cfg.get("pipeline") and run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        from .pipeline import run_pipeline

        return run_pipeline(cfg, list(HydraConfig.get().overrides.task))
    from .runner import run_stage

    return run_stage(cfg, run_dir)


def _check_sweeper(cfg: DictConfig, hydra_cfg) -> None:
    """An optimising sweeper (Optuna) needs a number from every trial: refuse before the first one trains."""
    target = str(OmegaConf.select(hydra_cfg, "sweeper._target_") or "")
    if "optuna" in target.lower() and not cfg.sweep_objective:
        raise UserError("sweep_objective: the Optuna sweeper needs the metric to optimise, e.g. "
                        "sweep_objective=policy_eval.gold_policy (a dotted path into the stage's metrics.json)")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra task. Returns `sweep_objective` of the run (None when unset): what Optuna optimises."""
    global _task_started
    _task_started = True
    if _held is not None:
        _held.release()  # the task's own output goes out as it is written
    from hydra.core.hydra_config import HydraConfig

    from . import distributed

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.mode == "check" and not distributed.is_main():  # under a launcher one report is enough
        _remove_if_empty(run_dir)
        return
    try:
        _check_sweeper(cfg, HydraConfig.get())
        if cfg.mode == "train" and not cfg.get("pipeline") and distributed.is_main():
            from .run.runs import own_hydra_run_dir

            run_dir = own_hydra_run_dir(cfg, run_dir)  # exclusively: a same-second run gets <name>-1
        if cfg.mode == "train" and (distributed.launched() or distributed.uses_deepspeed(cfg)):
            if not cfg.get("pipeline"):
                from .runner import validate

                validate(cfg)  # a refused config costs no process group
            # Before any model exists: ZeRO-3 partitions models as they are built.
            distributed.init(cfg)
            run_dir = _agree_on_run_dir(cfg, run_dir)
        result = run(cfg, None if cfg.get("pipeline") else run_dir)
        objective = sweep_objective(result, cfg.sweep_objective)
    except UserError as e:
        if distributed.is_main() or not distributed.launched():
            print(f"rlhf: error: {e.message}", file=sys.stderr)
        _remove_if_empty(run_dir)
        _release(run_dir)
        distributed.teardown()
        sys.exit(2)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training (rlhf.run.preemption)
        print(f"rlhf: interrupted (Ctrl-C); status interrupted in {run_dir}: relaunch the same command to resume",
              file=sys.stderr)
        _release(run_dir)
        sys.exit(130)
    except BaseException as e:
        _release(run_dir)
        from .run.preemption import Interrupted

        if isinstance(e, Interrupted):  # checkpointed at a step boundary: one line, 128 + the signal
            print(f"rlhf: {e}", file=sys.stderr)
            distributed.teardown()
            sys.exit(e.exit_code)
        from .run import diskfull

        if diskfull.cause(e, run_dir) is not None:  # one message, status failed (rlhf.run.diskfull)
            diskfull.quiet_logging()
            print(f"rlhf: error: {diskfull.message(e, run_dir)}", file=sys.stderr)
            distributed.teardown()
            sys.exit(2)
        raise
    _release(run_dir)
    distributed.teardown()
    if cfg.mode == "check":
        _remove_if_empty(run_dir)
    if objective is not None:
        log.info("sweep objective %s = %.6g", cfg.sweep_objective, objective)
    return objective


def _agree_on_run_dir(cfg: DictConfig, hydra_dir: Path) -> Path:
    """Every rank takes rank 0's run (and pipeline) directory: `rlhf.distributed.agree_on_run_dir`."""
    from . import distributed
    from .run.artifacts import config_hash

    pipeline_dir = str(cfg.pipeline.dir) if cfg.get("pipeline") else None
    chosen = distributed.agree_on_run_dir(str(hydra_dir), str(cfg.run_dir), pipeline_dir)
    OmegaConf.update(cfg, "run_dir", chosen["run_dir"], merge=False)
    if chosen["pipeline_dir"] is not None:
        OmegaConf.update(cfg, "pipeline.dir", chosen["pipeline_dir"], merge=False)
    distributed.check_same_config(config_hash(OmegaConf.to_container(cfg, resolve=True)))
    return Path(chosen["hydra_dir"])


def _remove_if_empty(run_dir: Path) -> None:
    """Hydra creates the run dir before we start: a refused run or a check leaves nothing behind."""
    from .run import runs

    if run_dir.is_dir() and runs.is_fresh(run_dir):
        import shutil

        root = logging.getLogger()
        for h in list(root.handlers):  # else a later log line (submitit's, Hydra's) re-creates the file
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == run_dir.resolve():
                root.removeHandler(h)
                h.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def _release(run_dir: Path) -> None:
    from .run import runs

    runs.release(run_dir)


def main() -> None:
    if sys.argv[1:2] == ["report"]:  # not a Hydra app: reads a finished sweep directory
        from .report.frontier import main as report_main

        sys.exit(report_main(sys.argv[2:]))
    register_resolvers()
    from . import cmdline

    try:  # the command line means what it says: refused before anything is composed (rlhf.cmdline)
        sys.argv = [sys.argv[0], *cmdline.check(_rewrite_argv(sys.argv[1:]))]
    except UserError as e:
        print(f"rlhf: error: {e.message}", file=sys.stderr)
        sys.exit(2)
    from contextlib import nullcontext

    from .cmdline import one_config_repository, wants_help

    global _held
    _held = None if os.environ.get("HYDRA_FULL_ERROR") == "1" else cmdline.HeldStderr()
    try:
        with one_config_repository() if wants_help(sys.argv[1:]) else nullcontext(), _held or nullcontext():
            try:
                _hydra_main()
            except SystemExit as e:
                # Hydra exits 1 on a composition error (unknown preset, bad override): bad input, in one line.
                if e.code == 1 and not _task_started and _held is not None and not _held.released:
                    summary = _held.summary()
                    _held.held = []
                    _held.release()
                    print(f"rlhf: error: {summary}", file=_held.real)
                raise
            finally:
                if _held is not None:
                    _held.release()  # whatever else was written before the task: as it was
    except SystemExit as e:
        if e.code == 1 and not _task_started:
            sys.exit(2)
        raise
    except Exception as e:
        if _task_started or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        # Hydra refused the command line outside its own error report (e.g. `-m` with `--cfg`): one line.
        print(f"rlhf: error: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
