#!/usr/bin/env bash
# Set up nasrl on a Debian machine with Python 3.11: system packages, a virtual environment in .venv,
# and the nasrl package in it (editable). Safe to run again: it only adds what is missing.
#
#   bash scripts/setup.sh          what a search needs
#   bash scripts/setup.sh --test   also what the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi

# -- Debian packages ---------------------------------------------------------------------------
packages=(dataset-fashion-mnist)  # Fashion-MNIST (MIT licence) in /usr/share/datasets/fashion-mnist
# The tests run real parts: Prometheus scrapes a real search; buildah builds and runs the image.
[ "$with_tests" -eq 1 ] && packages+=(prometheus buildah debootstrap)
python3 -c "import ensurepip" 2>/dev/null || packages+=(python3-venv)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: cannot install ${missing[*]} (no apt-get or no root); use --data-dir for the dataset" >&2
  fi
fi

# -- Python ------------------------------------------------------------------------------------
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "setup: nasrl needs Python 3.11 or newer (found $(python3 --version))" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# The CPU build first, pinned: a bare "torch" requirement could pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" torch==2.13.0
if [ "$with_tests" -eq 1 ]; then "${pip[@]}" -e ".[test]"; else "${pip[@]}" -e .; fi
echo "setup: ready (.venv/bin/nasrl)"
