# Images for sgan-service. Targets:
#   serve (the default, last stage): the HTTP server, CPU torch, the bundled model, non-root, ~1 GB smaller
#                                    than a CUDA build.
#   train:                           the same package for `sgan-train`; build it with a CUDA torch index
#                                    (docker-compose.yml's `train` service does) to train on a GPU.
#
#   docker build -t sgan-service:serve .
#   docker build --target train --build-arg TORCH_INDEX_URL=https://pypi.org/simple -t sgan-service:train .
#
# tests/test_deploy_files.py checks this file against the real CLIs, settings and routes.

# The Python that CI tests the package on (Debian bookworm's 3.11).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------
# build: a virtual environment with torch and the package; pip and the sources stay in this stage.
FROM ${PYTHON_IMAGE} AS build

# The torch build: the CPU wheels by default (the serving image needs nothing else). For CUDA pass
# TORCH_INDEX_URL=https://pypi.org/simple (PyPI's Linux wheels are the CUDA build) or a
# https://download.pytorch.org/whl/cuXXX index. TORCH_VERSION follows constraints.txt.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, in its own layer: it is by far the largest and changes least often.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY model ./model
COPY training ./training
COPY app ./app
# A regular (not editable) install: the code and the bundled model (package data) land in site-packages.
# The constraint keeps pip from swapping the torch build installed above for PyPI's.
RUN echo "torch==${TORCH_VERSION}" > /tmp/torch-constraint.txt \
    && pip install --no-cache-dir -c /tmp/torch-constraint.txt . \
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

# A fixed uid so that host directories can be prepared for it (chown 10001). /data, /runs and /models are
# the compose volumes' mount points: a named volume starts with the image directory's owner, so the
# non-root user can write to it.
RUN groupadd --system --gid 10001 sgan \
    && useradd --system --no-log-init --uid 10001 --gid sgan --home-dir /home/sgan --create-home \
       --shell /usr/sbin/nologin sgan \
    && mkdir -p /data /runs /models \
    && chown sgan:sgan /data /runs /models

COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /home/sgan

# ---------------------------------------------------------------------------------------------------------
# train: `docker compose --profile train run --rm train sgan-train --dataset fashion-mnist ... --out /runs/NAME`
FROM runtime AS train

# Named datasets are looked up in $SGAN_DATA_DIR (see training/data.py); compose mounts the data here.
ENV SGAN_DATA_DIR=/data
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
