#!/usr/bin/env bash
# Installs what Mind 4 needs from Debian's packages and the npm registry; safe to run again.
# Nothing is downloaded at run time: everything a command or test reads comes from here or the repo.
set -euo pipefail
cd "$(dirname "$0")/.."

# Only what the code uses today: cpp-httplib (server) and pybind11 (Python module) come with
# the parts that need them, so that a fresh machine installs no more than it builds.
DEBIAN_PACKAGES=(
  build-essential clang libclang-rt-14-dev cmake ninja-build pkg-config git clang-format
  libpcre2-dev libedit-dev nlohmann-json3-dev libyaml-cpp-dev libcli11-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev python3
  nodejs npm bible-kjv-text bible-kjv fortunes-ru
)

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from elsewhere (nvm, a tarball); a working `node` and `npm` is what counts.
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || filtered+=("$p"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The tiktoken npm package ships the o200k_base vocabulary (encoders/o200k_base.json) and is the
# independent oracle of the tokenizer tests.
if [[ ! -f third_party/node_modules/tiktoken/encoders/o200k_base.json ]]; then
  echo "setup: installing the tiktoken npm package into third_party/"
  mkdir -p third_party
  (cd third_party && npm install --no-audit --no-fund --loglevel=error tiktoken@1.0.22)
fi
echo "setup: all dependencies present"
