#!/usr/bin/env bash
# Sets up (or refreshes) the virtual environment with pccheck installed; safe to run again.
#   scripts/setup.sh            # .venv with pccheck and its test tools
# PCCHECK_VENV=path picks another venv; PCCHECK_SYSTEM_SITE=1 lets the venv see a torch the cluster provides
# (e.g. an Alps uenv or container), which is then used as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PCCHECK_VENV:-.venv}
py=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  opts=()
  [ "${PCCHECK_SYSTEM_SITE:-0}" = 1 ] && opts+=(--system-site-packages)
  "$py" -m venv "${opts[@]}" "$venv"
fi
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)

if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if [ "$(uname -m)" = x86_64 ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    "${pip[@]}" torch==2.13.0   # CPU build; an unpinned torch would pull a multi-GB CUDA build
  else
    "${pip[@]}" torch           # a GPU or Arm machine without a provided torch
  fi
fi

# Rebuild only when the sources of the package changed (the C++ build takes a while on 2 cores).
stamp="$venv/.pccheck-build"
digest=$(cat pyproject.toml setup.py csrc/* 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ] || ! "$venv/bin/python" -c "import pccheck._core" 2>/dev/null; then
  "${pip[@]}" "setuptools>=64" "pybind11>=2.12" wheel
  "${pip[@]}" --no-build-isolation -e ".[all,test]"
  echo "$digest" > "$stamp"
fi
echo "pccheck is installed in $venv (activate with: . $venv/bin/activate)" >&2
