#!/usr/bin/env bash
# The project's test command (README "Run every test"; .ci/run calls it):
# installs dependencies, builds with ASan+UBSan and -Werror, runs every C
# unit and integration test through ctest, then every Python test with
# Debian's interpreter. Exits non-zero on the first failing stage.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/install-deps.sh

build=${POSP2P_TEST_BUILD_DIR:-$root/build/asan}
echo "== configure + build (ASan+UBSan, -Werror) in $build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DPOSP2P_SANITIZE=ON -DPOSP2P_WERROR=ON >/dev/null
cmake --build "$build" -j "$(nproc)"

echo "== ctest"
# detect_leaks stays on: the codec and engine must not leak.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 300

echo "== pytest"
export POSP2P_BUILD_DIR="$build"
pytest_dirs=()
for d in proto/tests conformance; do
  if compgen -G "$d/test_*.py" >/dev/null || compgen -G "$d/**/test_*.py" >/dev/null; then
    pytest_dirs+=("$d")
  fi
done
if [ ${#pytest_dirs[@]} -eq 0 ]; then
  echo "no Python tests found" >&2
  exit 1
fi
/usr/bin/python3 -m pytest -q -p no:cacheprovider "${pytest_dirs[@]}"
