#!/usr/bin/env bash
# Every GPU number in one command, within ~10 minutes, saved to one folder: run it from the repo root
# on the GPU machine, so that no GPU time goes to set-up.
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # default: $OUT if set, else benchmarks/out/gpu
#
# If the machine lacks ezv's dependencies but has jax[cuda] (flax, optax, chex, orbax), build the
# wheels first on a machine with a package index (`bash ../shared/tools/device-wheels.sh` writes .whl/)
# and copy .whl/ with the repository; this script installs them into /tmp/site.
#
# Knobs (environment variables): PARTS and BUDGET_S (benchmarks, below), LEARN_ENV, LEARN_PRESET (auto, or
# ez1_atari / muzero_atari for the EfficientZero 2021 and MuZero modes), LEARN_S and FULL (the learning run).
# The defaults aim at one 10-minute call (~1 min set-up, 330 s of benchmarks — BUDGET_S only stops further
# parts from starting — and 150 s of learning); FULL=1 takes as long as the whole run. Test it on a CPU with
# a tiny budget before a GPU session:
#   BUDGET_S=1 PARTS=flags LEARN_S=60 LEARN_ENV=CartPole-v1 bash benchmarks/gpu.sh /tmp/gpu-dry-run
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
# 1. Benchmarks. PARTS: a subset, e.g. "peak loop/atari flags" (default: the ones a GPU session most
# needs, in that order). BUDGET_S (default 330): no further part starts after it.
python3 -m benchmarks all --profile --out "$OUT_DIR" --budget-s "${BUDGET_S:-330}" \
    --parts ${PARTS:-peak loop/atari flags loop/atari_bf16 loop/dmc_state search seeds loop/dmc_image} 2>&1 | tee "$OUT_DIR/log.txt"

# 2. A learning run: LEARN_ENV (default Pong-v5), 2 seeds in one program, evaluations every 2k env steps,
# stopped after LEARN_S seconds (default 150); FULL=1 runs the whole Atari-100k recipe instead (100k env
# steps, 20k offline updates, final 27k-step evaluation) and prints its score beside EZ-V2's. The run
# lives in /tmp (its checkpoints hold the replay: gigabytes); its config and metrics come back in OUT_DIR.
LEARN_DIR=/tmp/ezv-learning-run
rm -rf "$LEARN_DIR"
if [ "${FULL:-0}" = 1 ]; then
    LEARN_FLAGS=(--checkpoint-interval 0)
    LIMIT=()
else
    LEARN_FLAGS=(--eval-interval 2000 --eval-episodes 4 --checkpoint-interval 0)
    LIMIT=(timeout -k 30 -s INT "${LEARN_S:-150}")  # SIGINT: ezv.train stops cleanly; KILL 30 s later if not
fi
${LIMIT[@]+"${LIMIT[@]}"} python3 -m ezv.train --env-id "${LEARN_ENV:-Pong-v5}" --preset "${LEARN_PRESET:-auto}" \
    --num-seeds 2 --run-dir "$LEARN_DIR" --quiet \
    --no-tensorboard "${LEARN_FLAGS[@]}" 2>&1 | tee "$OUT_DIR/learning_log.txt"
mkdir -p "$OUT_DIR/learning"
cp "$LEARN_DIR"/config.yaml "$LEARN_DIR"/metrics.jsonl "$OUT_DIR/learning/" 2>/dev/null
python3 -m benchmarks learning --from-runs "$LEARN_DIR" --json "$OUT_DIR/learning/summary.json" 2>&1 \
    | tee -a "$OUT_DIR/learning_log.txt"
