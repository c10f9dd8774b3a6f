# Images for sgan-service. Targets:
#   serve (the default, last stage): the HTTP server, CPU torch, the bundled model, non-root, ~1 GB smaller
#                                    than a CUDA build.
#   train:                           the same package for `sgan-train` and `sgan-eval`. With the default
#                                    (CPU) torch it trains anywhere and shares every layer but the last
#                                    with serve; built with a CUDA torch index (docker-compose.yml's
#                                    `train-gpu` service does) it trains on a GPU.
#
#   docker build -t sgan-service:serve .
#   docker build --target train -t sgan-service:train .
#   docker build --target train --build-arg TORCH_INDEX_URL=https://pypi.org/simple -t sgan-service:train-cuda .
#
# Every dependency but torch is installed from requirements.lock (exact versions, sha256 hashes: the versions
# CI tests); torch is pinned by TORCH_VERSION (constraints.txt) and comes from TORCH_INDEX_URL, since its CPU
# and CUDA builds are different files of one version.
#
# Builds without Docker Hub or PyPI (an internal mirror, a TLS-inspecting proxy) need no edit here: pass a
# base image, the package indexes and a CA bundle (README, "Deploy with Docker"):
#   --build-arg PYTHON_IMAGE=... --build-arg PIP_INDEX_URL=... [--build-arg PIP_EXTRA_INDEX_URL=...]
#   --build-arg TORCH_INDEX_URL=... --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt
# The secret is read by pip during the build only; it is in no layer of either image.
#
# tests/test_deploy_files.py checks this file against the real CLIs, settings, routes and the lock.

# The Python that CI tests the package on (Debian bookworm's 3.11). Any image with Python 3.11, venv and
# Debian's useradd will do: scripts/compose-smoke.sh builds a stand-in with mmdebstrap where Docker Hub is
# out of reach.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------
# build: a virtual environment with torch and the package; pip and the sources stay in this stage.
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Each ARG is declared just before the first step that reads it: a build argument is part of the cache key
# of every RUN after its declaration.
# The index for every package but torch (pip reads these two variables itself): PyPI, or a mirror of it.
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=

# The locked dependencies, then torch, in their own layers: they are by far the largest and change least
# often. In hash-checking mode pip refuses any file whose sha256 is not in the lock. The optional `pip_ca`
# secret is a PEM bundle that pip trusts instead of its own (a TLS-inspecting proxy's or a mirror's CA).
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && pip install --require-hashes -r /tmp/requirements.lock

# The torch build: the CPU wheels by default (the serving image needs nothing else). For CUDA pass
# TORCH_INDEX_URL=https://pypi.org/simple (PyPI's Linux wheels are the CUDA build) or a
# https://download.pytorch.org/whl/cuXXX index. TORCH_VERSION follows constraints.txt. torch's own
# dependencies are in the lock, so for the CPU build pip adds torch alone; a CUDA build adds its nvidia-*
# and triton packages, which the lock cannot pin (they exist only for that build).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url "${PIP_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY model ./model
COPY training ./training
COPY app ./app
# A regular (not editable) install: the code and the bundled model (package data) land in site-packages.
# No dependencies and no build isolation: everything, setuptools included, came from the lock above, so
# this step reaches no index. `pip check` proves the lock holds every dependency pyproject.toml declares.
RUN pip install --no-deps --no-build-isolation . \
    && pip check \
    && python -I -c "import model; assert (model.BUNDLED_MODEL_DIR / 'model.json').is_file(), 'bundled model missing'" \
    && pip uninstall --yes pip

# ---------------------------------------------------------------------------------------------------------
# runtime: what both targets share. No compiler, no pip, no sources, no tests: the venv and a user.
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="sgan-service" \
      org.opencontainers.image.description="Semi-supervised GAN image classifier: HTTP service and trainer" \
      org.opencontainers.image.licenses="MIT"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed uid so that host directories can be prepared for it (chown 10001); a regular account, since
# 10001 is outside the system range (useradd --system warns about it). /data, /runs and /models are the
# compose volumes' mount points: a named volume starts with the image directory's owner, so the non-root
# user can write to it.
RUN groupadd --gid 10001 sgan \
    && useradd --no-log-init --uid 10001 --gid sgan --home-dir /home/sgan --create-home \
       --shell /usr/sbin/nologin sgan \
    && mkdir -p /data /runs /models \
    && chown sgan:sgan /data /runs /models

COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /home/sgan

# ---------------------------------------------------------------------------------------------------------
# train: `docker compose --profile train run --rm train sgan-train --dataset fashion-mnist ... --out /runs/NAME`
FROM runtime AS train

# Named datasets are looked up in $SGAN_DATA_DIR (training/readers/known.py); compose mounts the data here. The
# entrypoint says what to mount when /data is empty, and SGAN_IN_CONTAINER makes the loader's "not found"
# message say what to mount instead of its host hints (apt-get, --download, pip), which cannot work here.
ENV SGAN_DATA_DIR=/data \
    SGAN_IN_CONTAINER=1
COPY --chmod=0755 docker/train-entrypoint.sh /usr/local/bin/train-entrypoint
ENTRYPOINT ["train-entrypoint"]
CMD ["sgan-train", "--help"]

# ---------------------------------------------------------------------------------------------------------
# serve (default): `docker run -p 8000:8000 sgan-service:serve` serves the bundled model with no volume;
# SGAN_MODEL_DIR=/models/NAME (with a volume on /models) serves a trained one.
FROM runtime AS serve

# Listen on every interface of the container; every other setting keeps app/settings.py's default.
ENV SGAN_HOST=0.0.0.0 \
    SGAN_PORT=8000
EXPOSE 8000

# Healthy = the model is loaded (GET /ready answers 200; 503 and a refused connection both raise). The
# slim image has no curl, so the standard library does it. Loading torch and the model takes a while on
# a small machine, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SGAN_PORT', '8000') + '/ready', timeout=4)"]

CMD ["sgan-serve"]
