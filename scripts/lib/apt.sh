# Installing Debian packages a script needs, shared by scripts/install-browser.sh
# and scripts/bench-instructions. Source it; it defines:
#   apt_install PREFIX PACKAGE...
#       installs the packages with apt (as root, or with sudo), updating the
#       package lists once if the first attempt fails; messages start with PREFIX

apt_install() {
  local prefix=$1
  shift
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "$prefix: need root or sudo to install $*" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "$prefix: installing $* with apt"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q "$@" >/dev/null || {
    $sudo apt-get update -q >/dev/null
    $sudo apt-get install -y -q "$@" >/dev/null
  }
}
