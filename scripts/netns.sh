#!/usr/bin/env bash
# netns.sh: isolated network namespaces for posp2p-sim's namespace mode.
#
#   netns.sh up     --prefix P --count N [--addrs M] [--subnet 10.X]
#   netns.sh down   --prefix P
#   netns.sh status --prefix P
#   netns.sh run    --prefix P --count N [--addrs M] [--subnet 10.X] -- CMD [ARGS...]
#
# Layout: a hub namespace P-hub holding a Linux bridge br0, and N device
# namespaces P-0 .. P-(N-1). Namespace k is wired to the bridge by a veth
# pair (h<k> in the hub, eth0 in P-k) and gets the addresses
# 10.X.(k+1).1 .. 10.X.(k+1).M on a /16, so every namespace shares one
# subnet whose broadcast address 10.X.255.255 reaches all of them over the
# bridge. Nothing is created in the host namespace and nothing routes out:
# the namespaces have no default route and the hub has no uplink.
#
# up is idempotent: it first removes whatever an earlier run with the same
# prefix left behind (after a crash, say), then creates everything with a
# handful of `ip -batch` calls (one for the namespaces, one for the hub, one
# per namespace), so 250 namespaces take seconds. down removes every
# namespace with the prefix and succeeds when there is nothing to remove.
# run does up, runs CMD, and tears down on any exit (trap), returning CMD's
# status. Needs root and iproute2.
set -euo pipefail

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
prefix="" count=0 addrs=1 subnet="10.231"
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --count) count=$2; shift 2 ;;
    --addrs) addrs=$2; shift 2 ;;
    --subnet) subnet=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "netns.sh: unknown argument '$1'" >&2; usage ;;
  esac
done

[[ "$prefix" =~ ^[a-z0-9]{1,10}$ ]] || { echo "netns.sh: --prefix must be 1-10 of [a-z0-9]" >&2; exit 2; }
[[ "$subnet" =~ ^10\.([0-9]{1,3})$ ]] && [ "${BASH_REMATCH[1]}" -le 255 ] ||
  { echo "netns.sh: --subnet must be 10.X" >&2; exit 2; }

mine() {
  # Namespaces that belong to this prefix: P-hub and P-<number>.
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${prefix}-(hub|[0-9]+)\$" || true
}

down() {
  local list
  list=$(mine)
  [ -n "$list" ] || return 0
  # Device namespaces first, so that their veth ends go before the bridge.
  printf '%s\n' "$list" | grep -v -- '-hub$' | sed 's/^/netns del /' | ip -force -batch - 2>/dev/null || true
  printf '%s\n' "$list" | grep -- '-hub$' | sed 's/^/netns del /' | ip -force -batch - 2>/dev/null || true
  # Anything still there (a busy namespace): one at a time.
  for ns in $(mine); do ip netns del "$ns" 2>/dev/null || true; done
  [ -z "$(mine)" ]
}

up() {
  [[ "$count" =~ ^[0-9]+$ ]] && [ "$count" -ge 1 ] && [ "$count" -le 250 ] ||
    { echo "netns.sh: --count must be 1..250" >&2; exit 2; }
  [[ "$addrs" =~ ^[0-9]+$ ]] && [ "$addrs" -ge 1 ] && [ "$addrs" -le 250 ] ||
    { echo "netns.sh: --addrs must be 1..250" >&2; exit 2; }
  down
  local hub="${prefix}-hub" k j
  {
    echo "netns add $hub"
    for ((k = 0; k < count; k++)); do echo "netns add ${prefix}-$k"; done
  } | ip -batch -
  {
    echo "link add br0 type bridge"
    echo "link set br0 up"
    echo "link set lo up"
    for ((k = 0; k < count; k++)); do
      echo "link add h$k type veth peer name eth0 netns ${prefix}-$k"
      echo "link set h$k master br0"
      echo "link set h$k up"
    done
  } | ip -n "$hub" -batch -
  for ((k = 0; k < count; k++)); do
    {
      echo "link set lo up"
      for ((j = 1; j <= addrs; j++)); do
        echo "addr add ${subnet}.$((k + 1)).$j/16 dev eth0"
      done
      echo "link set eth0 up"
    } | ip -n "${prefix}-$k" -batch -
  done
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status)
    list=$(mine)
    if [ -z "$list" ]; then echo "no namespaces with prefix $prefix"; else printf '%s\n' "$list"; fi
    ;;
  run)
    [ $# -gt 0 ] || { echo "netns.sh: run needs -- CMD" >&2; exit 2; }
    trap 'down' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    up
    set +e
    "$@"
    rc=$?
    set -e
    exit $rc
    ;;
  *) usage ;;
esac
