#!/usr/bin/env bash
# GPU check, one run under 8 minutes: exports the a1-mid and evo1-full presets (random
# weights, with their torch checkpoints), then times the torch backend on CUDA (eager, and
# with CUDA graphs where capture works), ONNX Runtime's CUDA provider if installed and
# TensorRT where it is installed, and writes one JSON of latencies and memory.
#
#   scripts/gpu_check.sh [OUT.json]        (default gpu_check.json)
#   GPU_CHECK_BUDGET_S=450 GPU_CHECK_WORK=/tmp/gc PYTHON=python3 scripts/gpu_check.sh
#
# Without a CUDA GPU (no nvidia-smi, no device, or torch without CUDA) it stops at once with
# exit status 2 and says why; it never waits on a missing device. Every step has a time limit,
# and the JSON is rewritten after each step, so a slow step leaves the figures before it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=${1:-gpu_check.json}
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}
WORK=${GPU_CHECK_WORK:-$(mktemp -d -t vla_gpu_check.XXXXXX)}

fail() { echo "gpu_check: $*" >&2; exit 2; }

command -v nvidia-smi >/dev/null 2>&1 || fail "no CUDA here: nvidia-smi is not installed; nothing was measured"
timeout 30 nvidia-smi -L >/dev/null 2>&1 || fail "no CUDA here: nvidia-smi finds no GPU (or did not answer in 30 s); nothing was measured"
timeout 120 "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || fail "no CUDA here: torch ($PY) cannot use a CUDA device (a CPU-only build, or no driver); nothing was measured"

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
echo "gpu_check: work dir $WORK, budget ${BUDGET_S} s, writing $OUT" >&2
timeout --signal=TERM --kill-after=15 "$BUDGET_S" \
    "$PY" scripts/gpu_check.py --work "$WORK" --out "$OUT" --budget-s "$BUDGET_S"
