#!/usr/bin/env bash
# Multi-node training with the DeepSpeed launcher: run once, on the first node of the hostfile.
#
#   launch/multinode_deepspeed.sh HOSTFILE [rlhf overrides...]
#   launch/multinode_deepspeed.sh launch/hostfile stage=dpo data=generated data.source=... model.init_from=...
#
# It starts one process per slot on every node of HOSTFILE (DeepSpeed hostfile format, see
# hostfile.example) over ssh (pdsh), each running `python -m rlhf --local_rank=N <overrides>` with
# ZeRO-3 (`deepspeed=zero3`; override it, e.g. deepspeed=zero2 or deepspeed=zero3_offload).
# Every rank gets the same run_dir, fixed here once (a timestamp per node would split the run).
#
# Environment:
#   RUN_DIR         where the run goes; default $RLHF_RUNS_DIR (or runs)/multinode/<time>. Must be on a shared filesystem.
#   MASTER_ADDR     rendezvous host; default the first host in HOSTFILE.   MASTER_PORT: default 29500.
#   VENV            the virtual environment with rlhf installed; default .venv (same path on every node).
#   DEEPSPEED_ARGS  extra launcher flags, e.g. "--include worker-0@worker-1:0,1" or "--ssh_port 2222".
# The launcher forwards only NCCL_*/PYTHON*/UCX* variables to the other nodes; RLHF_*, HF_*, WANDB_*
# and TRANSFORMERS_* are forwarded here through a DeepSpeed env file (DS_ENV_FILE).
#
# Before a long queue: `rlhf check <same overrides> deepspeed=zero3 launch.world_size=<total GPUs>`
# prints the memory each process needs for the model states.
set -euo pipefail
# deepspeed=zero3 unless the arguments pick another (a key given twice is refused: rlhf.cmdline)
DS=deepspeed=zero3; for a in "$@"; do [[ $a == deepspeed=* ]] && DS=; done
[[ $# -ge 1 ]] || { echo "usage: launch/multinode_deepspeed.sh HOSTFILE [rlhf overrides...]" >&2; exit 2; }
HOSTFILE=$1
shift
[[ -f "$HOSTFILE" ]] || { echo "launch/multinode_deepspeed.sh: no hostfile at $HOSTFILE" >&2; exit 2; }
VENV=${VENV:-.venv}
MASTER_ADDR=${MASTER_ADDR:-$(awk '!/^[[:space:]]*#/ && NF {print $1; exit}' "$HOSTFILE")}
MASTER_PORT=${MASTER_PORT:-29500}
RUN_DIR=${RUN_DIR:-${RLHF_RUNS_DIR:-runs}/multinode/$(date +%Y-%m-%d_%H-%M-%S)}
RUN_DIR=$(realpath -m "$RUN_DIR")   # the remote shells start in the same directory, but be explicit

DS_ENV_FILE=$(mktemp "${TMPDIR:-/tmp}/rlhf-ds-env.XXXXXX")
export DS_ENV_FILE
trap 'rm -f "$DS_ENV_FILE"' EXIT
env | grep -E '^(RLHF|HF|WANDB|TRANSFORMERS|TOKENIZERS)_[A-Z_]*=' > "$DS_ENV_FILE" || true

# shellcheck disable=SC2086  # DEEPSPEED_ARGS is a list of flags
"$VENV/bin/deepspeed" --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    ${DEEPSPEED_ARGS:-} --module rlhf ${DS:+"$DS"} "run_dir=$RUN_DIR" "$@"
