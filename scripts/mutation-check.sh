#!/usr/bin/env bash
# The mutation check (tests/mutation/): plants each bug of tests/mutation/mutations.toml in a scratch copy of
# the tree (build/mutation: its own venv and builds) and fails unless the tests named for it catch every one.
#   scripts/mutation-check.sh                 # all of them (about 10 minutes on 2 cores)
#   scripts/mutation-check.sh --only NAME...  # some;  --list: what is planted and what must catch it
# Needs the project venv (scripts/setup.sh; PCCHECK_VENV picks another), cmake and a C++ compiler, and for
# the power-loss tests FUSE (scripts/install-crashfs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PCCHECK_VENV:-.venv}
[ -x "$venv/bin/python" ] || { echo "mutation-check: no venv at $venv; run scripts/setup.sh first" >&2; exit 2; }
exec "$venv/bin/python" tests/mutation/check.py "$@"
