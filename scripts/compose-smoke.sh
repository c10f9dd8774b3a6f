#!/usr/bin/env bash
# Smoke test of the Docker deployment, for a machine with a Docker engine and the compose plugin (none runs
# on our build machines, so CI only lints and validates the files: scripts/ci-deploy-checks.sh).
#
#   scripts/compose-smoke.sh                 build the serving image, start `api`, wait until it is healthy,
#                                            fetch a sample, classify it, check /ready, stop and clean up
#   scripts/compose-smoke.sh --train DIR     also build the train image and run a one-epoch training on the
#                                            Fashion-MNIST files in DIR (needs an NVIDIA GPU and the NVIDIA
#                                            container toolkit: the service reserves a GPU), publish the model
#                                            into the models volume, restart `api` on it and check /ready
#
# It runs as its own compose project (sgan-smoke) on its own port, so it leaves a running deployment, its
# volumes and its .env alone, and removes everything it created on exit. Needs curl on the host.
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=${SMOKE_PROJECT:-sgan-smoke}
PORT=${SMOKE_PORT:-18080}
HEALTH_TIMEOUT_S=${SMOKE_HEALTH_TIMEOUT_S:-300}
TRAIN_DATA=""
if [ "${1:-}" = --train ]; then
  TRAIN_DATA=$(cd "${2:?usage: $0 [--train DIR_WITH_fashion-mnist]}" && pwd)
fi

WORK=$(mktemp -d)
export SGAN_MODEL_DIR=""  # empty: the bundled model, whatever the caller's shell says
# Only what is passed here reaches the compose file: no .env and no other SGAN_* from the caller's shell.
compose() {
  env -u SGAN_API_KEY -u SGAN_LOG_LEVEL API_PORT="${PORT}" TRAIN_DATA_DIR="${TRAIN_DATA:-./data}" docker compose --project-name "${PROJECT}" --project-directory . -f docker-compose.yml --env-file /dev/null "$@"
}
cleanup() {
  local status=$?
  if [ "${status}" != 0 ]; then
    echo "--- smoke test failed; api logs:" >&2
    compose logs --no-color --tail 80 api >&2 || true
  fi
  compose --profile train down --volumes --remove-orphans >/dev/null 2>&1 || true
  rm -rf "${WORK}"
  exit "${status}"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

wait_healthy() {
  local container deadline state
  container=$(compose ps --quiet api)
  deadline=$((SECONDS + HEALTH_TIMEOUT_S))
  while :; do
    state=$(docker inspect --format '{{.State.Health.Status}}' "${container}")
    echo "api: ${state}"
    [ "${state}" = healthy ] && return 0
    if [ "${state}" = unhealthy ] || [ "${SECONDS}" -ge "${deadline}" ]; then
      echo "api did not become healthy within ${HEALTH_TIMEOUT_S}s" >&2
      return 1
    fi
    sleep 5
  done
}

step "build the serving image"
compose build api

step "start api on port ${PORT}"
compose up --detach api
wait_healthy

base="http://127.0.0.1:${PORT}"
step "GET /ready"
curl --fail --silent --show-error "${base}/ready" | tee "${WORK}/ready.json"
echo
grep -q '"status":"ready"' "${WORK}/ready.json"

step "GET /sample (one generated image, PNG)"
curl --fail --silent --show-error --output "${WORK}/sample.png" "${base}/sample?n=1&seed=0&format=png"
# The PNG signature: \x89PNG
[ "$(head -c 4 "${WORK}/sample.png" | od -An -tx1 | tr -d ' \n')" = 89504e47 ]
echo "sample.png: $(wc -c <"${WORK}/sample.png") bytes"

step "POST /classify (the sample)"
curl --fail --silent --show-error -F "file=@${WORK}/sample.png;type=image/png" "${base}/classify" \
  | tee "${WORK}/classify.json"
echo
grep -q '"label"' "${WORK}/classify.json"
grep -q '"realness"' "${WORK}/classify.json"

step "the container runs as a non-root user"
uid=$(compose exec -T api id -u)
[ "${uid}" != 0 ] || { echo "api runs as root" >&2; exit 1; }
echo "uid ${uid}"

if [ -n "${TRAIN_DATA}" ]; then
  step "build the train image and train one epoch on ${TRAIN_DATA}/fashion-mnist"
  compose --profile train build train
  compose --profile train run --rm train sgan-train --dataset fashion-mnist --labels-per-class 10 \
    --epochs 1 --train-subset 6000 --val-size 1000 --no-progress --out /runs/smoke
  compose --profile train run --rm train cp -r /runs/smoke/model /models/smoke

  step "restart api on the trained model"
  export SGAN_MODEL_DIR=/models/smoke
  compose up --detach api
  # Recreated with the new environment: wait for the new container.
  wait_healthy
  curl --fail --silent --show-error "${base}/ready" | tee "${WORK}/ready-trained.json"
  echo
  grep -q '"model_dir":"/models/smoke"' "${WORK}/ready-trained.json"
fi

step "stop"
compose --profile train down --volumes --remove-orphans
echo
echo "compose smoke test passed"
