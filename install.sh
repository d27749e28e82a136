#!/usr/bin/env bash
# One-step set-up: system rendering libraries (headless MuJoCo), a virtual environment in .venv,
# the CPU build of torch, and apt-bench itself. Usage: bash install.sh [--dev] [--libero] [--simpler]
set -euo pipefail
cd "$(dirname "$0")"

extras=()
for arg in "$@"; do
  case "$arg" in
    --dev) extras+=(dev) ;;
    --libero) extras+=(libero) ;;
    --simpler) extras+=(simpler) ;;
    *) echo "install.sh: unknown option $arg (use --dev, --libero, --simpler)" >&2; exit 2 ;;
  esac
done

# Headless OpenGL for MuJoCo: OSMesa (software) and Mesa's EGL; apt-bench probes which one works.
gl_pkgs=(libosmesa6 libegl1 libgl1-mesa-dri libegl-mesa0)
missing=()
for p in "${gl_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "install.sh: installing rendering libraries: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${gl_pkgs[@]}" >/dev/null
  else
    echo "install.sh: please install OSMesa or Mesa EGL (${missing[*]}) with your system's package manager" >&2
  fi
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU wheel first: a plain `torch` requirement could otherwise resolve to a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
spec="."
if [ ${#extras[@]} -gt 0 ]; then spec=".[$(IFS=,; echo "${extras[*]}")]"; fi
.venv/bin/python -m pip install -q -e "$spec"
# openpi's PyPI client (the interoperability tests drive `apt-bench serve` with it) declares numpy<2,
# yet runs on numpy 2: install it and its dm-tree without dependencies (reference/dependency-stack.md).
if [[ " ${extras[*]-} " == *" dev "* ]]; then .venv/bin/python -m pip install -q --no-deps "openpi-client==0.1.2" "dm-tree>=0.1.8"; fi
echo "install.sh: ready; use .venv/bin/apt-bench (or 'source .venv/bin/activate')"
