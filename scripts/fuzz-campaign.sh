#!/usr/bin/env bash
# Time-boxed libFuzzer campaign over the posp2p fuzz targets (fuzz/README.md).
#
#   scripts/fuzz-campaign.sh [OPTIONS] [TARGET...]
#
# For each target (default: every fuzz/fuzz_*.c that has a binary): run it
# for --seconds on a scratch copy of fuzz/corpus/<target> with its dictionary
# and options, merge the inputs that add coverage back into the corpus
# (-merge=1), copy every crash, timeout, leak or OOM input into
# fuzz/regressions/<target>/, then print a table of exec/s, corpus size and
# new crashes with their reproducer paths. Then (unless --no-coverage) build
# the replay drivers with clang source-based coverage in build/cov, replay
# every corpus and regression file, and print the line and branch coverage of
# proto/src (and sim/engine/src when the binaries contain it).
#
# Bounded: every fuzzer stops by itself after --seconds (-max_total_time),
# per-input timeout 10 s, RSS limit 2 GiB. Exit status: 0 if no target found
# a new crash, 1 if one did, 2 on a usage or setup error.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/fuzz-campaign.sh [OPTIONS] [TARGET...]

Options:
  --seconds N     fuzz each target for N seconds (default 120)
  --jobs J        libFuzzer fork mode with J parallel jobs per target
                  (default 1: one process; the machine has 2 cores)
  --skip-known    set POSP2P_FUZZ_SKIP_KNOWN=1: inputs that hit a known,
                  reported codec bug (fuzz/fuzz_common.h) are skipped, so the
                  campaign can find new bugs past them
  --no-coverage   skip the coverage step
  --coverage-only only the coverage step (no fuzzing)
  --regen-seeds   before fuzzing, regenerate seeds with fuzz_gen_seeds (real
                  encoders + proto/vectors) and merge them into the corpora
  --no-sanitizers fuzz a build without ASan/UBSan (build/fuzz-nosan), to
                  measure the sanitizer cost; crashes are still recorded, the
                  corpus is left alone (merging needs the sanitizers)
  -h, --help      this text

TARGET is a name such as fuzz_framer (default: all built targets).
Build dirs: build/fuzz (cmake --preset fuzz: clang, ASan+UBSan, libFuzzer),
build/cov (clang coverage, no sanitizers). Scratch files go to a temporary
directory that is removed at the end. Requires clang, cmake, ninja and
llvm-profdata/llvm-cov (Debian package llvm; scripts/install-deps.sh).
EOF
}

seconds=120
jobs=1
skip_known=0
do_fuzz=1
do_cov=1
regen=0
sanitize=ON
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
  --seconds) seconds=${2:?--seconds needs a value}; shift 2 ;;
  --seconds=*) seconds=${1#*=}; shift ;;
  --jobs) jobs=${2:?--jobs needs a value}; shift 2 ;;
  --jobs=*) jobs=${1#*=}; shift ;;
  --skip-known) skip_known=1; shift ;;
  --no-coverage) do_cov=0; shift ;;
  --coverage-only) do_fuzz=0; shift ;;
  --regen-seeds) regen=1; shift ;;
  --no-sanitizers) sanitize=OFF; shift ;;
  -h | --help) usage; exit 0 ;;
  -*) echo "fuzz-campaign: unknown option $1" >&2; usage >&2; exit 2 ;;
  *) targets+=("$1"); shift ;;
  esac
done
case "$seconds" in '' | *[!0-9]*) echo "fuzz-campaign: --seconds must be a number" >&2; exit 2 ;; esac
case "$jobs" in '' | *[!0-9]* | 0) echo "fuzz-campaign: --jobs must be a positive number" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.."
root=$(pwd)

# ---- tools -------------------------------------------------------------------
find_tool() { # first of the names that exists
  for t in "$@"; do
    if command -v "$t" >/dev/null 2>&1; then
      command -v "$t"
      return 0
    fi
  done
  return 1
}
need() {
  echo "fuzz-campaign: $1 not found ($2)" >&2
  exit 2
}
clang_bin=$(find_tool clang-14 clang) || need clang "install clang: scripts/install-deps.sh"
clangxx_bin=$(find_tool clang++-14 clang++) || need clang++ "install clang: scripts/install-deps.sh"
find_tool cmake >/dev/null || need cmake "scripts/install-deps.sh"
find_tool ninja >/dev/null || need ninja "scripts/install-deps.sh (ninja-build)"
if [ "$do_cov" = 1 ]; then
  profdata=$(find_tool llvm-profdata-14 llvm-profdata) ||
    need llvm-profdata "Debian package llvm (scripts/install-deps.sh), or run with --no-coverage"
  llvmcov=$(find_tool llvm-cov-14 llvm-cov) ||
    need llvm-cov "Debian package llvm (scripts/install-deps.sh), or run with --no-coverage"
fi

all_targets=()
for f in fuzz/fuzz_*.c; do
  all_targets+=("$(basename "$f" .c)")
done
if [ ${#targets[@]} -eq 0 ]; then
  targets=("${all_targets[@]}")
else
  for t in "${targets[@]}"; do
    [ -f "fuzz/$t.c" ] || { echo "fuzz-campaign: no target $t (fuzz/$t.c)" >&2; exit 2; }
  done
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/posp2p-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
if [ "$skip_known" = 1 ]; then
  export POSP2P_FUZZ_SKIP_KNOWN=1
fi

# Run a command quietly; on failure show the end of its output and stop.
quiet() {
  local log="$scratch/quiet.log"
  if ! "$@" >"$log" 2>&1; then
    echo "fuzz-campaign: failed: $*" >&2
    tail -n 30 "$log" >&2
    exit 2
  fi
}

# Value of KEY in fuzz/<target>.options ([libfuzzer] section), or $3.
option() {
  local file="fuzz/$1.options" v=""
  if [ -f "$file" ]; then
    v=$(sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*\\([^#[:space:]]*\\).*/\\1/p" "$file" | tail -n 1)
  fi
  echo "${v:-$3}"
}

# ---- fuzzing ----------------------------------------------------------------
status=0
if [ "$do_fuzz" = 1 ]; then
  if [ "$sanitize" = ON ]; then
    build=build/fuzz
    echo "== configure + build: cmake --preset fuzz ($build)"
    quiet cmake --preset fuzz
  else
    build=build/fuzz-nosan
    echo "== configure + build: libFuzzer without sanitizers ($build)"
    quiet cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_COMPILER="$clang_bin" -DCMAKE_CXX_COMPILER="$clangxx_bin" \
      -DPOSP2P_FUZZ=ON -DPOSP2P_SANITIZE=OFF
  fi
  build_targets=("${targets[@]}")
  [ "$regen" = 1 ] && build_targets+=(fuzz_gen_seeds)
  quiet cmake --build "$build" --target "${build_targets[@]}" -- -j "$jobs"

  if [ "$regen" = 1 ]; then
    echo "== regenerate seeds (fuzz_gen_seeds + proto/vectors) and merge"
    "$build/fuzz/fuzz_gen_seeds" "$scratch/seeds" proto/vectors
    for t in "${targets[@]}"; do
      [ -d "$scratch/seeds/$t" ] || continue
      mkdir -p "fuzz/corpus/$t"
      env -u POSP2P_FUZZ_SKIP_KNOWN "$build/fuzz/$t" -merge=1 -max_len="$(option "$t" max_len 65536)" \
        -artifact_prefix="$scratch/seeds/" "fuzz/corpus/$t" "$scratch/seeds/$t" >"$scratch/$t.seedmerge.log" 2>&1 ||
        { echo "fuzz-campaign: seed merge for $t failed:" >&2; tail -n 20 "$scratch/$t.seedmerge.log" >&2; exit 1; }
    done
  fi

  rows=()
  for t in "${targets[@]}"; do
    bin="$build/fuzz/$t"
    work="$scratch/$t"
    mkdir -p "$work/corpus" "$work/artifacts" "fuzz/corpus/$t"
    cp -r "fuzz/corpus/$t/." "$work/corpus/" 2>/dev/null || true
    before=$(find "fuzz/corpus/$t" -type f | wc -l)
    max_len=$(option "$t" max_len 65536)
    args=(-max_total_time="$seconds" -max_len="$max_len" -timeout=10
          -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$work/artifacts/")
    [ -f "fuzz/dict/$t.dict" ] && args+=(-dict="fuzz/dict/$t.dict")
    if [ "$jobs" -gt 1 ]; then
      args+=(-fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    fi
    echo "== $t: ${seconds}s, max_len $max_len, jobs $jobs"
    set +e
    "$bin" "${args[@]}" "$work/corpus" >"$work/fuzz.log" 2>&1
    rc=$?
    set -e
    # exec/s: libFuzzer's final statistics, else the last status line.
    execs=$(sed -n 's/^stat::average_exec_per_sec:[[:space:]]*//p' "$work/fuzz.log" | tail -n 1)
    [ -n "$execs" ] || execs=$(grep -o 'exec/s: [0-9]*' "$work/fuzz.log" | tail -n 1 | awk '{print $2}')
    [ -n "$execs" ] || execs="?"

    # Keep what adds coverage: merge the scratch corpus into the real one.
    # Not from a build without sanitizers: an input with a memory error it
    # cannot see would then fail the ASan replay test.
    # Never with POSP2P_FUZZ_SKIP_KNOWN: an input that hits a known bug
    # crashes the merge child, so it stays out of the corpus (it belongs in
    # fuzz/regressions) and the ordinary replay test keeps passing.
    mkdir -p "$work/merge-crashes"
    if [ "$sanitize" = ON ]; then
      env -u POSP2P_FUZZ_SKIP_KNOWN "$bin" -merge=1 -max_len="$max_len" \
        -artifact_prefix="$work/merge-crashes/" "fuzz/corpus/$t" "$work/corpus" \
        >"$work/merge.log" 2>&1 ||
        { echo "fuzz-campaign: merge for $t failed:" >&2; tail -n 20 "$work/merge.log" >&2; }
    fi
    after=$(find "fuzz/corpus/$t" -type f | wc -l)

    crashes=()
    for a in "$work"/artifacts/*; do
      [ -f "$a" ] || continue
      mkdir -p "fuzz/regressions/$t"
      dest="fuzz/regressions/$t/$(basename "$a")"
      cp "$a" "$dest"
      crashes+=("$dest")
    done
    if [ ${#crashes[@]} -gt 0 ] || { [ "$rc" -ne 0 ] && [ "$jobs" -eq 1 ]; }; then
      status=1
      echo "-- $t stopped with status $rc; last lines of its log:"
      grep -v '^#' "$work/fuzz.log" | tail -n 25
    fi
    rows+=("$t|$execs|$before|$after|${#crashes[@]}|${crashes[*]:-}")
  done

  echo
  printf '%-16s %9s %16s %8s  %s\n' target exec/s "corpus (+new)" crashes reproducers
  for r in "${rows[@]}"; do
    IFS='|' read -r t execs before after n paths <<<"$r"
    printf '%-16s %9s %16s %8s  %s\n' "$t" "$execs" "$after (+$((after - before)))" "$n" "${paths:--}"
  done
  echo "(${seconds}s per target, jobs $jobs, sanitizers $sanitize$([ "$skip_known" = 1 ] && echo ', known bugs skipped'))"
fi

# ---- coverage -----------------------------------------------------------------
if [ "$do_cov" = 1 ]; then
  cov=build/cov
  echo
  echo "== coverage: replay every corpus and regression file ($cov)"
  quiet cmake -S . -B "$cov" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_COMPILER="$clang_bin" -DCMAKE_CXX_COMPILER="$clangxx_bin" \
    -DPOSP2P_FUZZ=OFF -DPOSP2P_SANITIZE=OFF \
    -DCMAKE_C_FLAGS="-fprofile-instr-generate -fcoverage-mapping" \
    -DCMAKE_EXE_LINKER_FLAGS="-fprofile-instr-generate"
  replays=()
  for t in "${targets[@]}"; do replays+=("replay_$t"); done
  quiet cmake --build "$cov" --target "${replays[@]}" -- -j "$jobs"
  rm -rf "$cov/profiles"
  mkdir -p "$cov/profiles"
  objects=()
  for t in "${targets[@]}"; do
    bin="$cov/fuzz/replay_$t"
    objects+=(-object "$bin")
    if ! LLVM_PROFILE_FILE="$cov/profiles/$t-corpus.profraw" "$bin" "fuzz/corpus/$t" \
      >"$scratch/$t.cov.log" 2>&1; then
      echo "fuzz-campaign: replay of fuzz/corpus/$t failed (its coverage is missing):" >&2
      tail -n 5 "$scratch/$t.cov.log" >&2
      status=1
    fi
    if [ -d "fuzz/regressions/$t" ]; then
      # Regressions of open bugs still crash; skip those inputs so that the
      # process exits normally and writes its profile.
      POSP2P_FUZZ_SKIP_KNOWN=1 LLVM_PROFILE_FILE="$cov/profiles/$t-regressions.profraw" \
        "$bin" "fuzz/regressions/$t" >/dev/null 2>&1 || true
    fi
  done
  "$profdata" merge -sparse -o "$cov/fuzz.profdata" "$cov"/profiles/*.profraw
  srcs=("$root/proto/src")
  [ -d sim/engine/src ] && srcs+=("$root/sim/engine/src")
  report=$("$llvmcov" report -instr-profile="$cov/fuzz.profdata" -show-branch-summary \
    "${objects[@]:1}" "${srcs[@]}")
  echo "$report" | sed "s|$root/||"
  echo
  # TOTAL columns: regions, missed, cover, functions, missed, executed,
  # lines, missed, cover, branches, missed, cover.
  echo "$report" | awk '/^TOTAL/ {
    printf "line coverage %s (%d of %d lines), branch coverage %s (%d of %d branches)\n",
      $10, $8 - $9, $8, $13, $11 - $12, $11 }'
  echo "(replay of fuzz/corpus and fuzz/regressions; HTML: $llvmcov show -format=html -instr-profile=$cov/fuzz.profdata ${objects[*]:1} -output-dir=$cov/html)"
fi
exit $status
