"""Several processes, one run: the process group, one run directory for all ranks, rank-0-only work.

Any launcher works (`deepspeed`, `torchrun`, `accelerate launch`): they all export RANK, WORLD_SIZE
and LOCAL_RANK (the deepspeed launcher also appends `--local_rank=N`, dropped by `rlhf.cli`).

- `init` starts the process group before any model is built, so ZeRO-3 partitions a model while it
  is constructed (transformers' `from_pretrained` uses `deepspeed.zero.Init` when a ZeRO-3 config
  is live) and every library sees the real world size. A `deepspeed=` run without a launcher is a
  world of one, set up here, so `rlhf deepspeed=zero3` also works in one process.
- `agree_on_run_dir`: each rank resolves `${now:...}` on its own clock; rank 0's run directory wins
  and a different, empty one Hydra made for another rank is removed.
- Only rank 0 writes run-dir files (config, status, manifest, metrics, reports, W&B); the others
  compute and wait. `on_main` runs a piece of work on rank 0 and hands its result, or its UserError,
  to every rank, so a refused run exits 2 everywhere instead of hanging.
- `gathered_state_dict` collects a ZeRO-3 partitioned model, module by module, into one full
  state dict on rank 0: what `save_model` writes as an ordinary Hugging Face checkpoint.

Heavy libraries are imported inside functions: `rlhf --cfg job` must not import torch or deepspeed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import socket
from pathlib import Path
from typing import Any

from .errors import UserError

log = logging.getLogger(__name__)

# Ranks waiting for rank 0 (its evaluation, its merge of a LoRA adapter) give up after this long.
TIMEOUT = _dt.timedelta(hours=2)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Started by a launcher with more than one process."""
    return world_size() > 1


def uses_deepspeed(cfg) -> bool:
    return cfg.get("deepspeed") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init(cfg) -> None:
    """Start the process group (once) when launched or when a DeepSpeed config is chosen."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    if not is_main():
        _quiet_rank()
    if not launched():
        if not uses_deepspeed(cfg):
            return
        # DeepSpeed needs a process group even for one process: a world of one on this host.
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("LOCAL_RANK", "0")
    import torch

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if uses_deepspeed(cfg):
        # deepspeed.comm must know the world before ZeRO-3 partitions the first model (otherwise it
        # assumes one process and refuses the batch sizes); it starts torch.distributed underneath.
        import deepspeed

        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False, timeout=TIMEOUT)
    else:
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    log.info("rank %d of %d (local rank %s), backend %s%s", rank(), world_size(), os.environ["LOCAL_RANK"],
             backend, f", DeepSpeed ZeRO-{cfg.deepspeed.zero_optimization.stage}" if uses_deepspeed(cfg) else "")


def _initialized() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:
        return False
    return dist.is_available() and dist.is_initialized()


# ---- collective operations: every reduction over ranks is written here, once --------------------
def world() -> tuple[int, int]:
    """(rank, world size) of the process group; (0, 1) without one."""
    if world_size() > 1 and _initialized():
        import torch.distributed as dist

        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _reduction_device():
    """Where a reduction's tensor must live: the GPU under NCCL, the CPU under Gloo."""
    import torch
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def mean_over_ranks(x: float | dict[str, float]) -> float | dict[str, float]:
    """The mean over ranks of a number, or of every number of a dict (same keys on every rank), in
    float64, on every rank; the value itself without a process group of several ranks."""
    n = world()[1]
    if n == 1:
        return x
    import torch
    import torch.distributed as dist

    keys = sorted(x) if isinstance(x, dict) else None
    values = [float(x[k]) for k in keys] if keys is not None else [float(x)]
    t = torch.tensor(values, dtype=torch.float64, device=_reduction_device())
    dist.all_reduce(t)
    means = [v / n for v in t.tolist()]
    return dict(zip(keys, means, strict=True)) if keys is not None else means[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on one (so all ranks skip or stop together)."""
    if world()[1] == 1:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=_reduction_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def average_gradients(params) -> None:
    """Each parameter's gradient replaced by its mean over ranks (data parallelism without an engine)."""
    n = world()[1]
    if n == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= n


def barrier() -> None:
    if world_size() > 1 and _initialized():
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if world_size() == 1 or not _initialized():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any) -> list:
    if world_size() == 1 or not _initialized():
        return [obj]
    import torch.distributed as dist

    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def on_main(fn, *args, **kwargs):
    """fn(...) on rank 0 while the other ranks wait; every rank returns its result. A UserError on
    rank 0 is raised on every rank (each exits 2 with the message); any other error is raised as a
    RuntimeError on the others, the original with its traceback on rank 0."""
    if world_size() == 1 or not _initialized():
        return fn(*args, **kwargs)
    if not is_main():
        status, value = broadcast(None)
    else:
        try:
            result = fn(*args, **kwargs)
        except UserError as e:
            broadcast(("user_error", (e.problems, e.title)))
            raise
        except BaseException as e:
            broadcast(("error", f"{type(e).__name__}: {e}"))
            raise
        status, value = broadcast(("ok", result))
    if status == "user_error":
        raise UserError(value[0], title=value[1])
    if status == "error":
        raise RuntimeError(f"rank 0 failed: {value}")
    return value


def agree_on_run_dir(hydra_dir: str, run_dir: str, pipeline_dir: str | None) -> dict:
    """Rank 0's directories for every rank: each rank resolves `${now:...}` on its own clock, so the
    ranks would disagree. Returns {"hydra_dir", "run_dir", "pipeline_dir"} as rank 0 has them; a
    different, empty directory Hydra made on this rank is removed."""
    ours = {"hydra_dir": hydra_dir, "run_dir": run_dir, "pipeline_dir": pipeline_dir}
    chosen = broadcast(ours)
    if chosen["hydra_dir"] != hydra_dir:
        _remove_if_empty(Path(hydra_dir))
    return chosen


def check_same_config(digest: str) -> None:
    """Refuse (on every rank) a launch whose ranks composed different configs (`digest` = config hash)."""
    hashes = all_gather(digest)
    if len(set(hashes)) > 1:
        raise UserError(f"the {world_size()} ranks composed different configs (hashes by rank: {hashes}); launch "
                        "every rank with the same command line, code version and environment")


def _remove_if_empty(path: Path) -> None:
    if path.is_dir() and all(p.suffix == ".log" for p in path.iterdir()):
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def _quiet_rank() -> None:
    """Ranks other than 0 write no log file (rank 0's rlhf.log is the run's) and log warnings only."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler):
            root.removeHandler(h)
            h.close()
    logging.getLogger("rlhf").setLevel(logging.WARNING)
    for name in ("transformers", "trl", "deepspeed", "accelerate"):
        logging.getLogger(name).setLevel(logging.WARNING)


_BEFORE_TEARDOWN: list = []  # callables run by teardown() while the process group still exists


def before_teardown(fn) -> None:
    """Run `fn()` in `teardown` before the process group goes (a colocated vLLM engine shuts its own
    groups down there; at interpreter exit they would be destroyed after the world they live in)."""
    _BEFORE_TEARDOWN.append(fn)


def teardown() -> None:
    while _BEFORE_TEARDOWN:
        _BEFORE_TEARDOWN.pop()()
    if _initialized():
        import torch.distributed as dist

        dist.destroy_process_group()


# ---- ZeRO-3 -----------------------------------------------------------------------------------------
def is_partitioned(model) -> bool:
    """True when ZeRO-3 holds this model's parameters in shards."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


@contextlib.contextmanager
def zero3_init_off():
    """Build a whole (unpartitioned) model while a ZeRO-3 config is live: transformers would
    otherwise partition it at construction (only right for models a DeepSpeed engine will own)."""
    from transformers.integrations import deepspeed as hf_ds

    saved = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = saved


@contextlib.contextmanager
def gathered(model):
    """All of a ZeRO-3 model's parameters whole on every rank for the block (a forward pass before
    the DeepSpeed engine exists); nothing to do otherwise."""
    if not is_partitioned(model):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield


def gathered_state_dict(model) -> dict | None:
    """The model's full state dict on rank 0 (CPU tensors), None elsewhere. Collective under ZeRO-3:
    every rank must call it. Parameters are gathered one module at a time, so no rank ever holds
    more than one module's worth beyond its shard."""
    if not is_partitioned(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()} if is_main() else None
    import deepspeed

    full: dict[int, Any] = {}
    seen: set[int] = set()  # tied weights appear under two modules: gather once, on every rank alike
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        if not own:
            continue
        seen.update(id(p) for p in own)
        with deepspeed.zero.GatheredParameters(own, modifier_rank=None):
            if is_main():
                for p in own:
                    full[id(p)] = p.data.detach().cpu().clone()
    if not is_main():
        return None
    return {k: full.get(id(v), v).detach().cpu() for k, v in model.state_dict(keep_vars=True).items()}


def unwrapped(model):
    """The module inside a DeepSpeed engine (TRL keeps a ZeRO-3 reference as one), else `model`."""
    if model is not None and type(model).__name__ == "DeepSpeedEngine":
        return model.module
    return model


def copy_params(named: list[tuple[str, Any]]) -> dict[str, Any]:
    """{name: whole CPU copy} of the named parameters. Replicas (no ZeRO-3): each rank copies its
    own. ZeRO-3: collective (every rank calls it); each parameter gathered in turn, so no rank holds
    more than one whole parameter beyond its shard; rank 0 keeps the copies, the others get {}."""
    if not any(hasattr(p, "ds_id") for _, p in named):
        return {n: p.detach().to("cpu", copy=True) for n, p in named}
    import deepspeed

    out = {}
    for n, p in named:
        with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
            if is_main():
                out[n] = p.data.detach().to("cpu", copy=True)
    return out


def load_params(named: list[tuple[str, Any]], values: dict[str, Any]) -> None:
    """Put `copy_params`'s values back into the parameters of the same names. ZeRO-3: collective;
    rank 0's copies are written into the gathered parameter and re-partitioned to every rank."""
    import torch

    if not any(hasattr(p, "ds_id") for _, p in named):
        with torch.no_grad():
            for n, p in named:
                if n in values:
                    p.copy_(values[n].to(p.device))
        return
    import deepspeed

    for n, p in named:
        with deepspeed.zero.GatheredParameters([p], modifier_rank=0), torch.no_grad():
            if is_main():
                p.data.copy_(values[n].to(p.data.device))
