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

# --simpler: SAPIEN (ManiSkill3) renders on CPU through Mesa's lavapipe Vulkan driver, which needs
# Mesa >= 24.3 (Debian 12 ships 22.3; bookworm-backports ships 25.x). Enable <codename>-backports
# from the machine's own Debian apt source (same mirror and keyring) and install it from there.
if [[ " ${extras[*]-} " == *" simpler "* ]] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  distro="$(. /etc/os-release && echo "${ID:-}")"
  if [ "$distro" = debian ] && [ -n "$codename" ]; then
    bp="/etc/apt/sources.list.d/apt-bench-${codename}-backports.sources"
    if ! grep -rqs -- "${codename}-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      # The URI (and Signed-By) of the entry that serves "<codename>" itself, in deb822 or one-line form.
      src=""
      for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && [ -z "$src" ] || continue
        src="$(awk -v c="$codename" '
          function flush() { if (!done && uri != "" && (" " suites " ") ~ (" " c " ")) { print uri "|" key; done = 1 }
                             uri = ""; key = ""; suites = "" }
          /^[ \t]*$/ { flush(); next }
          /^URIs:/ { uri = $2 } /^Signed-By:/ { key = $2 } /^Suites:/ { $1 = ""; suites = $0 }
          /^deb[ \t]/ && !done { line = $0; sub(/\[[^\]]*\]/, "", line); split(line, w)
                                 if (w[3] == c) { print w[2] "|"; done = 1 } }
          END { flush() }' "$f" | head -n 1)"
      done
      uri="${src%%|*}"; key="${src#*|}"
      if [ -z "$uri" ]; then
        echo "install.sh: no Debian apt source for '$codename' found in /etc/apt/sources.list*; add" \
             "${codename}-backports yourself and install mesa-vulkan-drivers from it (Mesa >= 24.3)" >&2
      else
        echo "install.sh: enabling ${codename}-backports from $uri for mesa-vulkan-drivers (lavapipe)"
        { echo "Types: deb"; echo "URIs: $uri"; echo "Suites: ${codename}-backports"; echo "Components: main"
          if [ -n "$key" ]; then echo "Signed-By: $key"; fi; } | $SUDO tee "$bp" >/dev/null
      fi
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t "${codename}-backports" \
      mesa-vulkan-drivers >/dev/null
  else
    dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || {
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers >/dev/null; }
  fi
  echo "install.sh: CPU rendering for --simpler: export VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.json" \
       "(Mesa >= 24.3: $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo '?'))"
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
