#!/usr/bin/env bash
# Every GPU number in one command, within ~10 minutes, saved to one folder: run it from the repo root
# on the GPU machine, so that no GPU time goes to set-up.
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # default: $OUT if set, else benchmarks/out/gpu
#
# If the machine lacks ezv's dependencies but has jax[cuda] (flax, optax, chex, orbax), build the
# wheels first on a machine with a package index (`bash ../shared/tools/device-wheels.sh` writes .whl/)
# and copy .whl/ with the repository; this script installs them into /tmp/site. BUDGET_S (default 420)
# is the time after which no further benchmark part starts.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-benchmarks/out/gpu}}"
mkdir -p "$OUT_DIR"
if [ -d .whl ] && ! python3 -c "import mctx, tyro" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing .whl/ failed" >&2; exit 1; }
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 MUJOCO_GL="${MUJOCO_GL:-disable}"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null; } | tee "$OUT_DIR/machine.txt"
python3 -c "import jax, flax, mctx; print('jax', jax.__version__, 'flax', flax.__version__, 'mctx', mctx.__version__, jax.devices())" \
    | tee -a "$OUT_DIR/machine.txt"
# PARTS: a subset, e.g. "peak loop/atari seeds" (default: all, most needed first).
python3 -m benchmarks all --profile --out "$OUT_DIR" --budget-s "${BUDGET_S:-420}" ${PARTS:+--parts $PARTS} 2>&1 \
    | tee "$OUT_DIR/log.txt"
