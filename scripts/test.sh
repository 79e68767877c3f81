#!/usr/bin/env bash
# Sets up the venv and runs the tests.
#   scripts/test.sh            # fast suite (a few minutes)
#   scripts/test.sh --all      # everything CI runs: fast + slow suites, C++ core tests, a real local Slurm,
#                              # then the mutation check (scripts/mutation-check.sh)
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
all=0
if [ "${1:-}" = --all ]; then all=1; shift; fi
scripts/setup.sh
venv=${PCCHECK_VENV:-.venv}
export PATH="$PWD/$venv/bin:$PATH"

if [ "$all" = 0 ]; then
  # the power-loss tests' FUSE disk double; without it (no root, no /dev/fuse) they skip and say why
  scripts/install-crashfs.sh || echo "test.sh: the power-loss tests will skip (FUSE not installable here)" >&2
  exec pytest "$@"
fi
scripts/install-crashfs.sh

state=$(mktemp -d /tmp/pccheck-slurm.XXXXXX)
export PCCHECK_SLURM_STATE=$state                 # the tests' own calls of local-slurm.sh use it too
trap 'scripts/local-slurm.sh stop "$state" >/dev/null || true' EXIT
eval "$(scripts/local-slurm.sh start "$state")"   # prints: export SLURM_CONF=...
export PCCHECK_REQUIRE_SLURM=1                    # Slurm tests fail instead of skipping
scripts/check-core.sh all
pytest -m "" "$@"
scripts/mutation-check.sh
