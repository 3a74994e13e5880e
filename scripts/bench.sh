#!/usr/bin/env bash
# Run every posp2p benchmark (issue 7) with one command: configure and build
# the release preset (build/release), run each benchmark that exists, write
# bench/results/<date>/<name>.json plus the printed table <name>.txt, then
# turn the JSON into PNG charts (scripts/bench-charts.py). Benchmarks print
# numbers; nothing here fails on a threshold.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

usage() {
  cat <<'EOF'
usage: scripts/bench.sh [--smoke] [--build-dir DIR] [--out DIR] [--no-charts]
                        [--no-build] [-- ARGS for posp2p-bench-codec]

Configures and builds the release preset (Release, no sanitizers) in
build/release, runs every benchmark that exists and writes, per benchmark,
<out>/<name>.json and <out>/<name>.txt (the table), then PNG charts.

  --smoke          tiny sizes (seconds): checks that everything runs; the
                   numbers mean nothing. Results go to <date>-smoke.
  --build-dir DIR  build here instead of build/release (still Release)
  --out DIR        results directory (default bench/results/<UTC date>)
  --no-charts      skip scripts/bench-charts.py
  --no-build       use the existing build as it is
  --help           this text

Benchmarks: codec (bench/codec), connection scaling (bench/scaling,
posp2p-bench-scaling: drives posp2p-sim at 100..10,000 devices, about 4
minutes) and relay throughput (bench/relay, posp2p-bench-relay: posp2p vs a
raw libuv relay, about 2 minutes). A benchmark whose target is not
configured (sim/ left out of POSP2P_COMPONENTS) is reported as not built.

Real numbers need a quiet machine: the script prints the load average and
warns when other work is running. Run it twice and compare if in doubt.
EOF
}

smoke=0
build_dir=""
out=""
charts=1
build=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --build-dir) build_dir=${2:?--build-dir needs a directory}; shift ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    --no-charts) charts=0 ;;
    --no-build) build=0 ;;
    --help|-h) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "bench.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

day=$(date -u +%Y-%m-%d)
if [ -z "$out" ]; then
  out="$root/bench/results/$day"
  [ $smoke -eq 1 ] && out="$out-smoke"
fi
mkdir -p "$out"

if [ $build -eq 1 ]; then
  echo "== configure (release preset)"
  if [ -z "$build_dir" ]; then
    cmake --preset release >/dev/null
    build_dir="$root/build/release"
  else
    cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DPOSP2P_SANITIZE=OFF >/dev/null
  fi
else
  build_dir=${build_dir:-$root/build/release}
fi

# Every benchmark: <name> <ninja target> <binary path inside the build>.
benches=(
  "codec posp2p-bench-codec bench/codec/posp2p-bench-codec"
  "scaling posp2p-bench-scaling bench/scaling/posp2p-bench-scaling"
  "relay posp2p-bench-relay bench/relay/posp2p-bench-relay"
)

if [ $build -eq 1 ]; then
  targets=()
  for b in "${benches[@]}"; do
    read -r _ target _ <<<"$b"
    # Only the benchmark targets: a half-written test elsewhere in the tree
    # must not stop the benchmarks from building.
    if ninja -C "$build_dir" -t query "$target" >/dev/null 2>&1; then
      targets+=("$target")
    fi
  done
  echo "== build ${targets[*]}"
  cmake --build "$build_dir" --target "${targets[@]}"
fi

load=$(cut -d' ' -f1 /proc/loadavg)
cpus=$(nproc)
echo "== load average $load on $cpus cpus"
if awk -v l="$load" -v c="$cpus" 'BEGIN { exit !(l > c / 4) }'; then
  echo "bench.sh: warning: the machine is busy (load $load); numbers will be noisy" >&2
fi

# Recorded in every result file ("source_revision").
POSP2P_BENCH_GIT=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
export POSP2P_BENCH_GIT

status=0
ran=()
for b in "${benches[@]}"; do
  read -r name _ path <<<"$b"
  exe="$build_dir/$path"
  if [ ! -x "$exe" ]; then
    echo "== $name: not built yet (skipped)"
    continue
  fi
  args=(--json "$out/$name.json")
  [ $smoke -eq 1 ] && args+=(--smoke)
  [ "$name" = codec ] && args+=("${extra[@]}")
  echo "== $name: $exe ${args[*]}"
  if "$exe" "${args[@]}" | tee "$out/$name.txt"; then
    ran+=("$name")
  else
    echo "bench.sh: $name failed" >&2
    status=1
  fi
done

if [ $charts -eq 1 ] && [ ${#ran[@]} -gt 0 ]; then
  echo "== charts"
  if ! /usr/bin/python3 "$root/scripts/bench-charts.py" "$out"; then
    echo "bench.sh: charts failed" >&2
    status=1
  fi
fi

echo "== results in $out"
ls -1 "$out"
exit $status
