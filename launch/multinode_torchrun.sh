#!/usr/bin/env bash
# Multi-node training with torchrun and a c10d rendezvous: run the same command on every node.
#
#   NNODES=2 RDZV_HOST=worker-0 RUN_DIR=runs/dpo-8b launch/multinode_torchrun.sh [rlhf overrides...]
#
# Each node starts GPUS_PER_NODE processes (`python -m rlhf <overrides>`, ZeRO-3 through
# `deepspeed=zero3`); they meet at RDZV_HOST:RDZV_PORT (the c10d store runs inside the first torchrun
# to arrive: no separate master). No ssh between nodes is needed, unlike the DeepSpeed launcher.
#
# Environment:
#   NNODES          nodes in the job (required). A range like 2:4 makes the job elastic.
#   RDZV_HOST       a host every node can reach, usually the first node (required). RDZV_PORT: default 29400.
#   RUN_DIR         where the run goes (required: each node starts at its own time, so a timestamped
#                   default would differ between nodes). On a shared filesystem.
#   RDZV_ID         the job's id, the same on every node; default derived from RUN_DIR.
#   GPUS_PER_NODE   default: the GPUs nvidia-smi lists on this node.
#   VENV            the virtual environment with rlhf installed; default .venv.
set -euo pipefail
# deepspeed=zero3 unless the arguments pick another (a key given twice is refused: rlhf.cmdline)
DS=deepspeed=zero3; for a in "$@"; do [[ $a == deepspeed=* ]] && DS=; done
need() { [[ -n "${!1:-}" ]] || { echo "launch/multinode_torchrun.sh: set $1 ($2)" >&2; exit 2; }; }
need NNODES "nodes in the job"
need RDZV_HOST "a host every node can reach, usually the first node"
need RUN_DIR "the run directory, the same on every node, on a shared filesystem"
VENV=${VENV:-.venv}
RDZV_PORT=${RDZV_PORT:-29400}
RDZV_ID=${RDZV_ID:-rlhf-$(printf '%s' "$(realpath -m "$RUN_DIR")" | cksum | cut -d' ' -f1)}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}
[[ "$GPUS_PER_NODE" -ge 1 ]] || { echo "launch/multinode_torchrun.sh: no GPU found; set GPUS_PER_NODE" >&2; exit 2; }

exec "$VENV/bin/torchrun" --nnodes="$NNODES" --nproc-per-node="$GPUS_PER_NODE" \
    --rdzv-backend=c10d --rdzv-endpoint="$RDZV_HOST:$RDZV_PORT" --rdzv-id="$RDZV_ID" \
    -m rlhf ${DS:+"$DS"} "run_dir=$(realpath -m "$RUN_DIR")" "$@"
