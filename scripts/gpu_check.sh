#!/usr/bin/env bash
# GPU readiness check (issue 19): one prepared script, under 8 minutes on one GPU.
#
#   bash scripts/gpu_check.sh            # prints Markdown tables for BENCHMARKS.md
#
# 1. the device (nvidia-smi, TensorFlow's view);
# 2. the training-step benchmark: ResNet-34 OAT, batch 128, PGD-7, in float32
#    and mixed_float16, with and without XLA (`python -m oat_tf.bench`);
# 3. the plain convolution throughput and the PGD-7 attack loop's share of it
#    (`python -m oat_tf.bench.attack_share`; the goal is at least 50%);
# 4. training on CIFAR-10-shaped random data (32×32×3, 10 classes) for 300 steps
#    with MirroredStrategy on one GPU, mixed_float16 and XLA
#    (`python -m oat_tf.train`).
#
# Every section has its own time limit, so one that hangs cannot eat the others'
# time; a section that fails is reported and the next one runs. The Python
# that runs it is $PYTHON (default: .venv/bin/python if present, else python3)
# and must already have requirements.txt installed: the device machine has no
# network. Scratch files go to $OUT (default: a temporary directory).
# GPU_CHECK_SMOKE=1 runs every section at toy sizes (SmallCNN, batch 16, 4 steps),
# to check the script itself on a CPU before a device's minutes are spent on it.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
  PY=.venv/bin/python
else
  PY=python3
fi
SCRATCH="${OUT:-$(mktemp -d)}/gpu_check"
mkdir -p "$SCRATCH"
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
START=$SECONDS
failed=0
if [[ "${GPU_CHECK_SMOKE:-0}" == 1 ]]; then
  BENCH_MODEL=small_cnn BATCH=16 STEPS=1 TRAIN_MODEL=small_cnn TRAIN_EXAMPLES=64 SHAPE="28, 28, 1"
else
  BENCH_MODEL=resnet34 BATCH=128 STEPS=5 TRAIN_MODEL=resnet18 TRAIN_EXAMPLES=38400 SHAPE="32, 32, 3"
fi

section() { echo; echo "== $1 ($(( SECONDS - START )) s elapsed)"; }
run_limited() {  # run_limited SECONDS COMMAND...: reports a failure or a timeout, never exits.
  local limit=$1; shift
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    failed=1
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then echo "!! timed out after ${limit} s: $*"; else echo "!! failed (rc=$rc): $*"; fi
  fi
}

section "device"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>/dev/null \
  || echo "nvidia-smi: not available"
if ! "$PY" -c "import tensorflow" 2>/dev/null; then
  echo "!! $PY cannot import tensorflow: install requirements.txt first (pip install -r requirements.txt)."
  exit 2
fi
"$PY" -c "
import tensorflow as tf
gpus = tf.config.list_physical_devices('GPU')
print('TensorFlow', tf.__version__, '| GPUs:', [tf.config.experimental.get_device_details(g).get('device_name', g.name) for g in gpus])
print('built with CUDA:', tf.test.is_built_with_cuda())
"

section "training step: $BENCH_MODEL OAT, batch $BATCH, PGD-7"
run_limited 210 "$PY" -m oat_tf.bench --models=$BENCH_MODEL --modes=function,xla \
  --precisions=float32,mixed_float16 --batch_size=$BATCH --attack_steps=7 --steps=$STEPS --warmup=2

section "plain convolution throughput and the attack loop's share"
run_limited 120 "$PY" -m oat_tf.bench.attack_share --architecture=$BENCH_MODEL --batch_size=$BATCH \
  --attack_steps=7 --precisions=float32,mixed_float16 --modes=function,xla --repeats=5

section "MirroredStrategy on one GPU: $(( TRAIN_EXAMPLES / BATCH )) steps of random data shaped ($SHAPE)"
"$PY" -c "
import numpy as np
rng = np.random.default_rng(0)
np.savez_compressed(
    '$SCRATCH/cifar_shaped_random.npz',
    x_train=rng.integers(0, 256, size=($TRAIN_EXAMPLES, $SHAPE), dtype=np.uint8),
    y_train=rng.integers(0, 10, size=$TRAIN_EXAMPLES),
    x_test=rng.integers(0, 256, size=(256, $SHAPE), dtype=np.uint8),
    y_test=rng.integers(0, 10, size=256),
)
"
run_limited 150 "$PY" -m oat_tf.train --name=gpu_check --runs_dir="$SCRATCH/runs" --export_dir= \
  --dataset="npz:$SCRATCH/cifar_shaped_random.npz" --augment=false --validation_size=0 \
  --num_eval_examples=256 --architecture=$TRAIN_MODEL --variant=oat --epsilon=8/255 --step_size=2/255 \
  --attack_steps=7 --epochs=1 --batch_size=$BATCH --strategy=mirrored --mixed_precision=mixed_float16 \
  --jit_compile --nodeterministic --eval_lambdas=0,1 --eval_attacks=train

section "done"
echo "total $(( SECONDS - START )) s; $([[ $failed -eq 0 ]] && echo 'every section passed' || echo 'some section failed (see !! above)')"
exit $failed
