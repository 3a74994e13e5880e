#!/usr/bin/env bash
# The README's main command: install the Debian packages, build the release
# preset, and run posp2p-sim's default scenario (one main POS, 200 ordering
# tablets, 2 secondary POS, 4 kitchen displays, 4 customer displays, about
# 20 s of lunch traffic on loopback addresses 127.20.x.y), then print the
# summary and where the JSON report and charts are. Exit status is the
# simulator's: 0 no violations, 1 violations, 2 bad option or scenario,
# 3 runtime failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

usage() {
  cat <<EOF
Usage: scripts/run.sh [--no-build] [--no-charts] [-- posp2p-sim options...]

Runs sim/scenarios/default.scn with posp2p-sim (build/release) and writes
build/reports/default.json (+ PNG charts in build/reports/default-charts/).
Options after -- replace the scenario, e.g.:
  scripts/run.sh -- --scenario sim/scenarios/loss.scn
  scripts/run.sh -- --tablets 987 --kds 6 --displays 4 --secondary 2
See posp2p-sim --help and sim/fleet/README.md.
EOF
}

build=1
charts=1
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --no-build) build=0 ;;
    --no-charts) charts=0 ;;
    --) shift; break ;;
    *) echo "run: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

build_dir=$root/build/release
if [ "$build" -eq 1 ]; then
  bash "$root/scripts/install-deps.sh"
  if [ ! -f "$build_dir/build.ninja" ]; then
    (cd "$root" && cmake --preset release >/dev/null)
  fi
  echo "run: building posp2p-sim (release) ..."
  cmake --build "$build_dir" --target posp2p-sim posp2p-peer >/dev/null
fi
sim=$build_dir/sim/fleet/posp2p-sim
[ -x "$sim" ] || { echo "run: $sim not found (drop --no-build)" >&2; exit 3; }

reports=$root/build/reports
mkdir -p "$reports"
report=$reports/default.json
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(--scenario "$root/sim/scenarios/default.scn")
fi
set +e
"$sim" "${args[@]}" --report "$report"
rc=$?
set -e
if [ -f "$report" ]; then
  echo "run: JSON report: $report"
  if [ "$charts" -eq 1 ]; then
    if /usr/bin/python3 "$root/scripts/sim-charts.py" "$report" >/dev/null 2>&1; then
      echo "run: charts: ${report%.json}-charts/"
    else
      echo "run: charts not written (scripts/sim-charts.py failed; the report is intact)" >&2
    fi
  fi
fi
exit $rc
