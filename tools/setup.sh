#!/usr/bin/env bash
# Sets up this checkout: a venv (.venv) with franken-rt installed and the demo model in the cache.
#   tools/setup.sh          to run models
#   tools/setup.sh --test   also the test tools: torch (CPU) + transformers, cross compilers (clang 16 for RISC-V's
#                           vector intrinsics) and qemu-user for the ARM/RISC-V kernel tests, llama.cpp's Python
#                           bindings for the interop tests, chromium + its driver for the chat page's browser test,
#                           Debian's arm64 Python (unpacked in the cache) to run the package under qemu-aarch64
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { echo "setup: $* (${SECONDS}s so far)" >&2; }
test_mode=false
[ "${1:-}" = "--test" ] && test_mode=true

if $test_mode; then
  need=()
  for tool in aarch64-linux-gnu-g++ riscv64-linux-gnu-g++ clang++-16 qemu-aarch64 qemu-riscv64 chromium chromedriver; do
    command -v "$tool" >/dev/null || need+=("$tool")
  done
  if [ ${#need[@]} -gt 0 ]; then
    step "installing ${need[*]} with apt (a few minutes)"
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq g++-aarch64-linux-gnu g++-riscv64-linux-gnu clang-16 \
      qemu-user chromium chromium-driver >/dev/null
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
if $test_mode; then
  step "installing franken-rt with its test tools into .venv (builds the C++ core; torch is a large download)"
  .venv/bin/pip install -q ".[test,serve]"
  # llama.cpp's Python bindings (interop tests) compile for ~10 minutes: build the wheel once, keep it in the cache
  if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
    wheels="${FRANKEN_CACHE:-$HOME/.cache/franken-rt}/wheels"
    mkdir -p "$wheels"
    if ! ls "$wheels"/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
      step "building llama-cpp-python 0.3.36 for the interop tests (~10 minutes on 2 cores, once: cached in $wheels)"
      CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_CURL=OFF" \
        .venv/bin/pip wheel -q --no-deps "llama-cpp-python==0.3.36" -w "$wheels"
    fi
    .venv/bin/pip install -q --no-deps "$wheels"/llama_cpp_python-0.3.36-*.whl
    .venv/bin/pip install -q diskcache  # its one runtime dependency beyond numpy, jinja2, typing-extensions
  fi
  step "fetching Debian's arm64 Python for the emulated end-to-end test (once: cached)"
  tools/arm64_python.sh
else
  step "installing franken-rt into .venv (builds the C++ core, about a minute)"
  .venv/bin/pip install -q ".[serve]"
fi
step "fetching the demo model"
.venv/bin/python tools/fetch_model.py >/dev/null
echo "setup: done in $((SECONDS - start))s" >&2
