#!/usr/bin/env bash
# The C++ core under AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer, on by default with ASan):
#   1. tests/cpp/kernel_check: every kernel table against the scalar one;
#   2. tests/cpp/model_check: full-context generations (each weight type, KV type and kernel table, a plan with a
#      repeated block), batch/trace/score paths and the caller-error paths; leaks are reported at exit;
#   3. the Python kernel and model tests against the sanitized extension (leak checking off there: the Python
#      interpreter itself keeps memory until exit by design).
# Any sanitizer report fails the run (-fno-sanitize-recover=all, exit code != 0).
# Usage: tools/sanitize.sh [pytest args...]   (after tools/setup.sh --test; the default pytest selection below)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$PWD/.venv/bin/python"
B=build/sanitize
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFRANKEN_SANITIZE=address,undefined \
  -DFRANKEN_TESTS=ON -DFRANKEN_PYTHON=ON -DPython_EXECUTABLE="$PY" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >/dev/null
ninja -C "$B" >/dev/null

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "== kernel_check (ASan+UBSan)"
"$B/kernel_check" | tail -1
echo "== model_check (ASan+UBSan+LSan)"
"$B/model_check" "$work" | tail -1

echo "== Python kernel and model tests on the sanitized extension"
mkdir -p "$work/pkg"
cp -r franken_rt "$work/pkg/"
rm -f "$work"/pkg/franken_rt/_core*.so
cp "$B"/_core*.so "$work/pkg/franken_rt/"
CXX="${CXX:-g++}"
if [ $# -eq 0 ]; then
  set -- tests/test_kernels.py tests/test_concurrency.py tests/test_bpe.py
fi
preload="$("$CXX" -print-file-name=libasan.so) $("$CXX" -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1
(cd "$work" && LD_PRELOAD="$preload" PYTHONPATH="$work/pkg" "$PY" -c \
  "import franken_rt._core as c; print('sanitized extension:', c.__file__)")
LD_PRELOAD="$preload" PYTHONPATH="$work/pkg" .venv/bin/pytest -q -p no:cacheprovider "$@"
