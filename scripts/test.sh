#!/usr/bin/env bash
# The project's test command (README "Run every test"; .ci/run calls it):
# installs dependencies, builds with ASan+UBSan and -Werror, and runs every
# test (C unit tests, Python tests on Debian's interpreter, multi-process
# integration tests, conformance and mutants, fuzz corpus replay) through
# ctest. Exits non-zero on the first failing stage.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/install-deps.sh

build=${POSP2P_TEST_BUILD_DIR:-$root/build/asan}
echo "== configure + build (ASan+UBSan, -Werror) in $build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DPOSP2P_SANITIZE=ON -DPOSP2P_WERROR=ON >/dev/null
cmake --build "$build" -j "$(nproc)"

echo "== ctest (C unit tests, Python tests, integration, conformance)"
# Every test, C or Python, is registered with ctest so that one runner
# reports one total. detect_leaks stays on: nothing may leak.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 600 \
  --no-tests=error
