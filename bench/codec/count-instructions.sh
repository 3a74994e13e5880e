#!/usr/bin/env bash
# Instructions per message for each codec benchmark row, counted with
# valgrind's callgrind: unlike ns/message these do not move with the load of
# a shared machine, so they back up the timed ratios. Slow (minutes).
#
# usage: bench/codec/count-instructions.sh BENCH_EXE [FILTER]
#   BENCH_EXE  a release build of posp2p-bench-codec
#   FILTER     only rows whose label contains it (default: all rows)
# Prints one markdown table row per benchmark row:
#   | label | instructions/message | top self-cost functions |
set -euo pipefail
exe=${1:?usage: count-instructions.sh BENCH_EXE [FILTER]}
only=${2:-}
command -v valgrind >/dev/null || { echo "valgrind not installed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# row label -> the benchmark's operation function (kept out of line, so that
# callgrind can collect inside it alone).
rows=(
  "v2/encode/posp2p/frame_encode op_v2_encode"
  "v2/encode/protobuf-c/pack op_pbc_pack"
  "v2/encode/google-cpp/serialize gb_encode"
  "v2/decode/posp2p/malloc op_v2_decode_malloc"
  "v2/decode/posp2p/arena op_v2_decode_arena"
  "v2/decode/posp2p/unpack-only op_unpack_arena"
  "v2/decode/protobuf-c/unpack+arena op_pbc_unpack_arena"
  "v2/decode/posp2p/validate-only op_validate"
  "v2/decode/google-cpp/reuse gb_decode_reuse"
  "v2/decode/google-cpp/arena gb_decode_arena"
  "legacy/encode/posp2p/buf op_legacy_encode"
  "legacy/decode/posp2p/malloc op_legacy_decode_malloc"
  "legacy/decode/posp2p/arena op_legacy_decode_arena"
)
echo "| row | instructions/message | largest self costs (instructions/message) |"
echo "|---|---:|---|"
for msg in heartbeat ack typical_order large_order; do
  for r in "${rows[@]}"; do
    read -r row fn <<<"$r"
    label="$msg/$row"
    case "$label" in *"$only"*) ;; *) continue ;; esac
    n=1000
    case "$label" in large_order/*|*/legacy/*) n=100 ;; esac
    case "$label" in large_order/legacy/*) n=20 ;; esac
    out="$tmp/cg.out"
    # Collect only inside the operation: setup and timing code stay out.
    valgrind --tool=callgrind --callgrind-out-file="$out" \
      --toggle-collect="$fn" "$exe" \
      --filter "$label" --iterations "$n" --repeats 5 >/dev/null 2>&1 || continue
    # Calls of the operation: first call + warm-up + 5 repetitions + the
    # allocation-count pass (see measure() and add_row()).
    k=$(( n < 10 ? 10 : (n > 1000 ? 1000 : n) ))
    calls=$(( 1 + n + 5 * n + k ))
    ir=$(callgrind_annotate "$out" 2>/dev/null |
         awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }')
    [ -n "$ir" ] || continue
    top=$(callgrind_annotate "$out" 2>/dev/null |
          awk -v c="$calls" 'k < 4 && /^ *[0-9,]+ +\( *[0-9.]+%\)/ && !/PROGRAM TOTALS/ {
                 n = $1; gsub(",", "", n); n = n / c; if (n < 50) next;
                 fn = $0; sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, "", fn);
                 sub(/ \[.*$/, "", fn);
                 if (substr(fn, 1, 4) == "???:") fn = substr(fn, 5);
                 else sub(/^[^:]*:/, "", fn);
                 gsub(/std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >/, "std::string", fn);
                 sub(/\(.*$/, "", fn);
                 printf "%s%s %.0f", sep, fn, n; sep = ", "; k++ }')
    printf "| %s | %d | %s |\n" "$label" $(( ir / calls )) "$top"
  done
done
