#!/usr/bin/env bash
# Install everything the tests need (venv, torch, PostgreSQL server binaries) and run them.
# Usage: bash scripts/test.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    echo "installing PostgreSQL (Debian package) for the distributed-worker tests" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "PostgreSQL server binaries not found; the PostgreSQL tests will be skipped (install: apt-get install postgresql)" >&2
  fi
fi
bash scripts/setup.sh test
export AUTOMTD_DATA="${AUTOMTD_DATA:-$(cd .. && pwd)/shared/datasets}"
export AUTOMTD_WEIGHTS="${AUTOMTD_WEIGHTS:-$(cd .. && pwd)/shared/weights}"
# static checks first (seconds): lint and types
.venv/bin/ruff check automtd tests benchmarks
.venv/bin/mypy automtd
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = "5" ]; then
  echo "pytest collected no tests: treated as a failure" >&2
  exit 1
fi
exit "$rc"
