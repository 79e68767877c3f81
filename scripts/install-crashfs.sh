#!/usr/bin/env bash
# Installs what the power-loss tests' FUSE disk double (tests/crashfs/, docs/power-loss.md) needs on the
# machine, only what is missing: libfuse3-3 (the library the mfusepy binding loads) and fuse3
# (fusermount3, for mounting without root). The Python binding itself (mfusepy) comes with the test extra
# of pyproject.toml (scripts/setup.sh). Debian/Ubuntu; apt-get runs as root or with sudo.
#   scripts/install-crashfs.sh
set -euo pipefail
pkgs=(libfuse3-3 fuse3)
need=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || need+=("$p")
done
if [[ ${#need[@]} -gt 0 ]]; then
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "install-crashfs: missing packages ${need[*]}; run as root or install them" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "install-crashfs: apt-get install ${need[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[[ -c /dev/fuse ]] || echo "install-crashfs: warning: no /dev/fuse on this machine; the power-loss tests cannot mount" >&2
