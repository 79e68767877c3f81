#!/usr/bin/env bash
# Installs what the power-loss tests' FUSE disk double (tests/crashfs/, docs/power-loss.md) needs on the
# machine, only what is missing: libfuse3-3 (the library the mfusepy binding loads) and fuse3
# (fusermount3, for mounting without root). The Python binding itself (mfusepy) comes with the test extra
# of pyproject.toml (scripts/setup.sh). Debian/Ubuntu; apt-get runs as root or with sudo.
#   scripts/install-crashfs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/apt-install.sh
. scripts/apt-install.sh
apt_install install-crashfs libfuse3-3 fuse3
[[ -c /dev/fuse ]] || echo "install-crashfs: warning: no /dev/fuse on this machine; the power-loss tests cannot mount" >&2
