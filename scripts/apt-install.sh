# Sourced by the scripts that install Debian packages on demand (check-core.sh, install-crashfs.sh).
# apt_install WHO PKG...: installs the packages not installed yet (as root, or with sudo); WHO names the caller
# in messages.
apt_install() {
  local who=$1 p need=() sudo=()
  shift
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || need+=("$p")
  done
  [[ ${#need[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "$who: missing packages ${need[*]}; run as root or install them" >&2; return 1; }
    sudo=(sudo)
  fi
  echo "$who: apt-get install ${need[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}
