#!/usr/bin/env bash
# One command on one GPU machine (an H200; no network; torch, transformers and peft installed):
# install the carried wheels, then bench/gpu.py (SFT/DPO bf16 at 2048 tokens with MFU, grouped vs
# packed batching, PPO rollout tokens/s, a QLoRA smoke run) -> one JSON. About 6-8 minutes.
#
#   make gpu-wheels                  # here, with network: fills .whl/ (wheels + the few assets needed)
#   bench/gpu.sh [--out FILE]        # there, from the repository root, .whl/ carried along
#   bench/gpu.sh --dry-run           # anywhere: the same plan on the CPU at toy size (tests/test_bench.py)
#
# The wheels are installed with --no-deps into a scratch folder put first on PYTHONPATH, so nothing
# the machine has is changed; our own package goes there as links (rlhf -> rlhf/, rlhf.conf -> conf/,
# rlhf.data -> data/, rlhf.reward -> reward/: what `pip install -e .` maps), so the code that runs
# is this checkout.
set -euo pipefail
CALLER=$PWD
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY=0
WHEELS=${WHEELS:-$ROOT/.whl}
OUT=""
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --out) OUT=$2; shift ;;
    --wheels) WHEELS=$2; shift ;;
    *) echo "usage: bench/gpu.sh [--dry-run] [--out FILE] [--wheels DIR]" >&2; exit 2 ;;
  esac
  shift
done
STAMP=$(date +%Y-%m-%d_%H-%M-%S)
OUT=${OUT:-$ROOT/runs/bench/gpu-$STAMP.json}
case $OUT in /*) ;; *) OUT=$CALLER/$OUT ;; esac
case $WHEELS in /*) ;; *) WHEELS=$CALLER/$WHEELS ;; esac
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rlhf-gpu.XXXXXX")
SITE=$WORK/site
mkdir -p "$SITE/rlhf"

if [ "$DRY" = 1 ]; then
  PY=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3 )}
else
  PY=${PYTHON:-python3}
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "gpu.sh: no wheels in $WHEELS (run make gpu-wheels first)" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
fi
# The wheel list is checked in both modes: a missing package fails here, not after the GPU started.
CHECK=(--check "$WHEELS")
[ "$DRY" = 1 ] && CHECK+=(--allow-missing)
"$PY" "$ROOT/bench/gpu_wheels.py" "${CHECK[@]}"

for f in "$ROOT"/rlhf/*; do
  case $(basename "$f") in __pycache__) ;; *) ln -s "$f" "$SITE/rlhf/" ;; esac
done
ln -s "$ROOT/conf" "$SITE/rlhf/conf"
ln -s "$ROOT/data" "$SITE/rlhf/data"
ln -s "$ROOT/reward" "$SITE/rlhf/reward"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${RLHF_ASSETS_DIR:-}" ]; then
  if [ -d "$WHEELS/assets" ]; then export RLHF_ASSETS_DIR=$WHEELS/assets; else export RLHF_ASSETS_DIR=$ROOT/../shared/assets; fi
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_NO_ADVISORY_WARNINGS=1 PYTHONUNBUFFERED=1

cd "$WORK"  # not the checkout's root, where `import rlhf` would find ./rlhf without rlhf.data
"$PY" - <<'EOF'
import importlib.metadata as md, rlhf, rlhf.conf, rlhf.data, rlhf.reward, sys
print("[gpu.sh] python", sys.version.split()[0], "| rlhf from", rlhf.__file__)
for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "hydra-core", "deepspeed", "bitsandbytes", "wandb"):
    try:
        print(f"[gpu.sh]   {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"[gpu.sh]   {name} missing")
EOF
ARGS=(--out "$OUT" --work "$WORK/run" --assets "$RLHF_ASSETS_DIR")
[ "$DRY" = 1 ] && ARGS+=(--dry-run)
"$PY" "$ROOT/bench/gpu.py" "${ARGS[@]}"
