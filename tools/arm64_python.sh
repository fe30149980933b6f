#!/usr/bin/env bash
# Debian's arm64 Python 3.11 (and numpy for it), unpacked into a folder that qemu-aarch64 runs from
# (QEMU_LD_PREFIX=FOLDER): tests/test_cross.py cross-builds franken-rt's core for it and runs the demo model
# through the Python package on emulated NEON CPUs. Nothing is installed on the system but the arm64 package lists.
#   tools/arm64_python.sh [FOLDER]   (default: $FRANKEN_CACHE/arm64-python, else ~/.cache/franken-rt/arm64-python)
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-${FRANKEN_CACHE:-$HOME/.cache/franken-rt}/arm64-python}"
[ -x "$root/usr/bin/python3.11" ] && [ -d "$root/site/numpy" ] && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The interpreter, its standard library and headers, and the shared libraries they and numpy's wheel load.
packages=(python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 libpython3.11-dev:arm64
  libc6:arm64 libgcc-s1:arm64 libstdc++6:arm64 libffi8:arm64 zlib1g:arm64 libexpat1:arm64 libbz2-1.0:arm64
  liblzma5:arm64 libssl3:arm64 libuuid1:arm64)
download() { (cd "$work" && apt-get download -qq "${packages[@]}" 2>&1 | { grep -v "^W: Download is performed unsandboxed" || true; }); }
if ! download; then  # arm64 added before, but its package lists are missing or stale
  $sudo apt-get update -qq
  download
fi
mkdir -p "$work/root/site"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
.venv/bin/pip download -q --only-binary=:all: --platform manylinux2014_aarch64 --python-version 3.11 \
  --implementation cp --abi cp311 --no-deps "numpy<2.3" -d "$work/wheels"
.venv/bin/python -m zipfile -e "$work"/wheels/numpy-*.whl "$work/root/site"
rm -rf "$root"
mkdir -p "$(dirname "$root")"
mv "$work/root" "$root"
