#!/usr/bin/env bash
# Regenerates requirements.lock: every package that pyproject.toml's runtime dependencies pull in, at an
# exact version with the sha256 of each of its files on the index, for the images' Python (3.11, Linux
# x86_64). The Dockerfile installs it in pip's hash-checking mode, and CI installs the test venv with it as
# constraints, so the images ship the versions the tests ran.
#
#   scripts/lock-image-deps.sh                           keep every locked version; add what pyproject added
#   scripts/lock-image-deps.sh --upgrade-package fastapi one package to its newest release
#   scripts/lock-image-deps.sh --upgrade                 every package to its newest release
#   scripts/lock-image-deps.sh --find-links DIR          also look in DIR (a local torch wheel); any other
#                                                        pip-compile option passes through the same way
#
# torch is resolved (pinned by constraints.txt, the CPU build, so that its CPU dependencies are locked) but
# left out of the file: its CPU and CUDA builds are different files of one version, and the Dockerfile
# installs it from TORCH_INDEX_URL. pip-tools comes from PyPI, pinned, into its own virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_TOOLS_VERSION=7.6.2
TOOLS_DIR=${LOCK_TOOLS_DIR:-.venv/lock-tools}
LOCK=requirements.lock

python3 - <<'PY' || exit 1
import platform, sys
if sys.version_info[:2] != (3, 11) or platform.machine() != "x86_64" or sys.platform != "linux":
    sys.exit(f"the images run Python 3.11 on Linux x86_64; this is {platform.python_version()} on "
             f"{sys.platform} {platform.machine()}: environment markers would resolve differently")
PY

if [ ! -x "${TOOLS_DIR}/bin/pip-compile" ]; then
  python3 -m venv "${TOOLS_DIR}"
fi
"${TOOLS_DIR}/bin/python" -m pip install -q --disable-pip-version-check "pip-tools==${PIP_TOOLS_VERSION}"

# setuptools is pip-compile's "unsafe" by default; naming torch instead keeps setuptools (which torch and
# the package build need) locked and torch out.
CUSTOM_COMPILE_COMMAND=scripts/lock-image-deps.sh "${TOOLS_DIR}/bin/pip-compile" --quiet --generate-hashes --strip-extras \
  --unsafe-package torch --constraint constraints.txt \
  --extra-index-url https://download.pytorch.org/whl/cpu \
  --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
  --output-file "${LOCK}" "$@" pyproject.toml

# pip-compile closes with a warning that torch is unpinned: say why instead.
python3 - "${LOCK}" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
note = (
    "# torch is not in this file: the Dockerfile installs it from TORCH_INDEX_URL (the CPU or a CUDA build)\n"
    "# at TORCH_VERSION, constraints.txt's pin. Its dependencies above are those of the CPU build.\n"
)
text, count = re.subn(r"\n# WARNING: The following packages were not pinned.*\Z", "\n" + note, text, flags=re.S)
if count != 1 or re.search(r"^torch==", text, flags=re.M):
    sys.exit(f"{path}: expected torch to be left out with pip-compile's warning; the output changed shape")
if re.search(r"^(nvidia-|triton==)", text, flags=re.M):
    sys.exit(f"{path}: CUDA packages: torch was resolved to a CUDA build (pass --find-links DIR with the CPU wheel)")
open(path, "w").write(text)
PY
echo "${LOCK}: $(grep -c '^[a-z]' "${LOCK}") packages"
