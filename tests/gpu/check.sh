#!/usr/bin/env bash
# On a machine with a GPU: bit-exact resume on CUDA (fp32, bf16), the snapshot stall and device-to-host
# bandwidth of the pccheck checkpointer, and the training overhead of a checkpoint at every step (default and
# sequence-length-1024 model), in under 5 minutes. Writes a JSON summary to $OUT or ./gpu-check.json.
#   tests/gpu/check.sh                 # needs CUDA
#   tests/gpu/check.sh --device cpu    # the same checks on the CPU (a smoke test of this script)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv/bin/python ] || scripts/setup.sh
exec .venv/bin/python tests/gpu/check.py "$@"
