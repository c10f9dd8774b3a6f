#!/bin/sh
# The train image's entrypoint: runs its command unchanged, after a note on stderr when a training or
# evaluation starts with nothing mounted at $SGAN_DATA_DIR. The data loader's own "not found" hints
# (apt-get, --download, pip) are written for a host; none of them works inside this image, which has no
# pip, no torchvision and a read-only view of the data.
set -eu

data_dir=${SGAN_DATA_DIR:-/data}
case "${1:-}" in
  sgan-train | sgan-eval)
    if [ -z "$(ls -A "${data_dir}" 2>/dev/null)" ]; then
      cat >&2 <<NOTE
train image: nothing is mounted at ${data_dir}, where named datasets (--dataset fashion-mnist, ...) are looked
up as ${data_dir}/<name>/. Put the dataset's files in a host folder, e.g. DIR/fashion-mnist/*-ubyte.gz
(on Debian: apt-get install dataset-fashion-mnist, then DIR=/usr/share/datasets), and start the container
with TRAIN_DATA_DIR=DIR (docker compose) or -v DIR:${data_dir}:ro (docker run). Downloading from inside the
container does not work: the image has no pip and no torchvision.
NOTE
    fi
    ;;
esac
exec "$@"
