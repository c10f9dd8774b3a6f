#!/usr/bin/env bash
# The GPU check: everything this project wants measured on a CUDA machine, in one device call of about 7 minutes
# (a lent machine gives a session 15 minutes in all, start included, and one command at most 10):
#   1. the CUDA tests (pytest -m gpu on tests/training/test_cuda.py);
#   2. training speed of the conv recipes (conv, the reference; conv-cpu) on 32x32 colour: fp32 and bf16
#      (channels_last is the trainer's memory format for conv nets), bf16 with torch.compile, and bf16
#      once more in the contiguous layout, to show what channels_last buys;
#   3. the reference recipe on CIFAR-10 with 400 labels per class, SSL and the labels-only baseline, each for
#      a fixed 90 seconds: the steps are those that 90 seconds hold at the speed step 2 measured, so the run is
#      repeatable as steps; its rows go into benchmarks/results/accuracy.{json,md}.
# Results land in benchmarks/results/; when the device tool sets $OUT, they and the log are copied there after
# every step, so what a step finished comes back even if a later one runs out of time.
#
# The device machine has its own python3 with torch, numpy, Pillow, safetensors, tqdm, matplotlib and
# scikit-learn, but not this project or its server's packages: the script runs from the checkout (PYTHONPATH)
# and step 1 collects only the CUDA tests, which need no server package. PYTHON=... picks the interpreter.
#
# The machine reaches no network and at most 64 MiB travel to it, so CIFAR-10 goes as a packed subset made here
# first (14,000 training images, of which a run labels 4,000, and 5,000 test images; about 51 MiB), beside
# Fashion-MNIST's test images (4 MiB), the foreign set of step 3's realness AUROC:
#     python benchmarks/pack_cifar.py data/cifar10 data/cifar10-gpu.npz
#     cp /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz data/fashion-t10k-images.gz
# then, through the device tool, with both files carried and a timeout of 600 s:
#     bash scripts/gpu-check.sh
#
# --dry-run runs every step on the CPU on tiny data this script writes, with results in a temporary folder
# (benchmarks/results/ untouched), so a typo costs seconds here rather than GPU minutes there.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
DATA=data/cifar10-gpu.npz
FASHION=data/fashion-t10k-images.gz
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --data) DATA=$2; shift ;;
    --fashion) FASHION=$2; shift ;;
    *) echo "usage: $0 [--dry-run] [--data PACKED.npz] [--fashion t10k-images-idx3-ubyte.gz]" >&2; exit 2 ;;
  esac
  shift
done

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="${PWD}${PYTHONPATH:+:${PYTHONPATH}}"  # the benchmarks import training/ and model/ from here
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
  FASHION=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
  # One of each kind of speed row (compiled and not), to keep the dry run to a few minutes of CPU.
  SPEED_ARGS=(--warmup 1 --steps 2 --conv-steps 2 --pool-size 400 --architectures conv-cpu --modes ssl)
  PRECISIONS=(bf16)
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
  BUDGET_SECONDS=90
  LABELS_PER_CLASS=400
  SPEED_ARGS=(--warmup 10 --steps 100 --conv-steps 50 --architectures conv conv-cpu)
  PRECISIONS=(fp32 bf16)
  if [ ! -f "${DATA}" ]; then
    echo "no ${DATA}: make it with 'python benchmarks/pack_cifar.py data/cifar10 ${DATA}' and carry it" >&2
    exit 2
  fi
  "${PYTHON}" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name())'
fi
if [ ! -f "${FASHION}" ]; then
  echo "no ${FASHION}: copy /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz there and carry it" >&2
  exit 2
fi
mkdir -p "${RESULTS}" "${WORK}"
if [ -n "${OUT:-}" ]; then exec > >(tee -a "${OUT}/gpu-check.log") 2>&1; fi
deliver() {  # the results so far, to the device tool's $OUT (flat: it returns at most 8 files)
  if [ -n "${OUT:-}" ]; then cp "${RESULTS}"/train_speed.* "${RESULTS}"/accuracy.* "${OUT}/" 2>/dev/null || true; fi
}

say "1. CUDA tests"
# Exit status 5 is "no test selected": every CUDA test skipped itself (the dry run has no GPU).
"${PYTHON}" -m pytest -q -p no:cacheprovider -m gpu tests/training/test_cuda.py || [ $? = 5 ]

say "2. training speed of the conv recipes"
speed() { "${PYTHON}" benchmarks/train_speed.py --device "${DEVICE}" "${SPEED_ARGS[@]}" --results "${RESULTS}/train_speed" "$@"; }
for precision in "${PRECISIONS[@]}"; do
  speed --precision "${precision}"
done
speed --precision bf16 --compile
speed --precision bf16 --memory-format contiguous  # the trainer's layout for conv nets is channels_last
deliver
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
    --fashion-images "${FASHION}" --train-args="--architecture conv --device ${DEVICE} --precision bf16" --results "${RESULTS}/accuracy"
  deliver
done

say "done: results in ${RESULTS}"
ls -l "${RESULTS}"
