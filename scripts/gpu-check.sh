#!/usr/bin/env bash
# The GPU check: everything this project wants measured on a CUDA machine, in one call of about 15 minutes.
#   1. the CUDA tests (pytest -m gpu);
#   2. training speed of the conv recipes (conv, the reference; conv-cpu) on 32x32 colour: fp32 and bf16,
#      each with and without torch.compile (channels_last is the trainer's memory format for conv nets on CUDA),
#      and bf16 once more in the contiguous layout, to show what channels_last buys;
#   3. the reference recipe on CIFAR-10 with 400 labels per class, SSL and the labels-only baseline, each for
#      a fixed 8 minutes: the steps are those that 8 minutes hold at the speed step 2 measured, so the run is
#      repeatable as steps; its rows go into benchmarks/results/accuracy.{json,md}.
# Results land in benchmarks/results/ (and a log in $OUT when the device tool sets it).
#
# The machine reaches no network and at most 64 MiB travel to it, so CIFAR-10 goes as a packed subset made here
# first (14,000 training images, of which a run labels 4,000, and 5,000 test images; about 51 MiB):
#     python benchmarks/pack_cifar.py data/cifar10 data/cifar10-gpu.npz
# then, through the device tool, with data/cifar10-gpu.npz carried:
#     bash scripts/gpu-check.sh
#
# --dry-run runs every step on the CPU on tiny data this script writes, with results in a temporary folder
# (benchmarks/results/ untouched), so a typo costs seconds here rather than GPU minutes there.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
DATA=data/cifar10-gpu.npz
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --data) DATA=$2; shift ;;
    *) echo "usage: $0 [--dry-run] [--data PACKED.npz]" >&2; exit 2 ;;
  esac
  shift
done

PYTHON=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
say() { printf '\n== %s (%s)\n' "$*" "$(date +%H:%M:%S)"; }

if [ "${DRY_RUN}" = 1 ]; then
  # GPU_CHECK_WORK keeps the dry run's files there (the test of this script reads them); else a temporary folder.
  if [ -n "${GPU_CHECK_WORK:-}" ]; then
    WORK=${GPU_CHECK_WORK}
  else
    WORK=$(mktemp -d)
    trap 'rm -rf "${WORK}"' EXIT
  fi
  RESULTS=${WORK}/results
  DEVICE=cpu
  BUDGET_SECONDS=3
  LABELS_PER_CLASS=4
  DATA=${WORK}/tiny-colour.npz
  # One of each kind of speed row (compiled and not), to keep the dry run to a few minutes of CPU.
  SPEED_ARGS=(--warmup 1 --steps 2 --conv-steps 2 --pool-size 400 --architectures conv-cpu --modes ssl)
  PRECISIONS=(bf16)
  OTHER_LAYOUT=channels_last  # the CPU's trainer uses the contiguous layout
  "${PYTHON}" - "${DATA}" <<'PY'
import sys
import numpy as np
rng = np.random.default_rng(0)
def images(count): return rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
np.savez(sys.argv[1], x_train=images(240), y_train=np.arange(240) % 10, x_test=images(20), y_test=np.arange(20) % 10)
PY
else
  WORK=runs/gpu-check
  RESULTS=benchmarks/results
  DEVICE=cuda
  BUDGET_SECONDS=480
  LABELS_PER_CLASS=400
  SPEED_ARGS=(--warmup 10 --steps 100 --conv-steps 50 --architectures conv conv-cpu)
  PRECISIONS=(fp32 bf16)
  OTHER_LAYOUT=contiguous  # the trainer uses channels_last for conv nets on CUDA
  if [ ! -f "${DATA}" ]; then
    echo "no ${DATA}: make it with 'python benchmarks/pack_cifar.py data/cifar10 ${DATA}' and carry it" >&2
    exit 2
  fi
  "${PYTHON}" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name())'
fi
mkdir -p "${RESULTS}" "${WORK}"

say "1. CUDA tests"
# Exit status 5 is "no test selected": every CUDA test skipped itself (the dry run has no GPU).
"${PYTHON}" -m pytest -q -m gpu tests || [ $? = 5 ]

say "2. training speed of the conv recipes"
for precision in "${PRECISIONS[@]}"; do
  for compile in "" --compile; do
    # shellcheck disable=SC2086  # $compile is empty or one flag
    "${PYTHON}" benchmarks/train_speed.py --device "${DEVICE}" --precision "${precision}" ${compile} \
      "${SPEED_ARGS[@]}" --results "${RESULTS}/train_speed"
  done
done
"${PYTHON}" benchmarks/train_speed.py --device "${DEVICE}" --precision bf16 --memory-format "${OTHER_LAYOUT}" \
  "${SPEED_ARGS[@]}" --results "${RESULTS}/train_speed"
if [ "${DRY_RUN}" = 1 ]; then  # step 3 needs the reference net's speed: one uncompiled row of each mode
  "${PYTHON}" benchmarks/train_speed.py --device cpu --precision bf16 --warmup 0 --conv-steps 1 --pool-size 400 \
    --architectures conv --results "${RESULTS}/train_speed"
fi

say "3. the reference recipe on CIFAR-10, ${LABELS_PER_CLASS} labels per class, ${BUDGET_SECONDS} s each for SSL and the baseline"
for mode in ssl baseline; do
  steps=$("${PYTHON}" benchmarks/train_speed.py --steps-for "${BUDGET_SECONDS}" --architectures conv \
    --modes "${mode}" --device "${DEVICE}" --precision bf16 --results "${RESULTS}/train_speed")
  echo "${mode}: ${steps} steps"
  "${PYTHON}" benchmarks/accuracy.py --dataset "${DATA}" --labels-per-class "${LABELS_PER_CLASS}" --seeds 0 --modes "${mode}" \
    --steps "${steps}" --recipe "conv-reference-${BUDGET_SECONDS}s" --runs-dir "${WORK}/runs" \
    --train-args="--architecture conv --device ${DEVICE} --precision bf16" --results "${RESULTS}/accuracy"
done

say "done: results in ${RESULTS}"
ls -l "${RESULTS}"
