#!/usr/bin/env bash
# posp2p demo: a main POS, two ordering tablets and a kitchen display on
# loopback (127.0.0.10-13), each a posp2p-peer process. Shows discovery, an
# order with its end-to-end acknowledgement, a tablet -> KDS message relayed
# by the main POS and an order-status broadcast, then shuts everything down.
# Exit status 0 when every step happened within its deadline.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${POSP2P_DEMO_BUILD_DIR:-$root/build/release}
udp_port=8765
tcp_port=8766
heartbeat_ms=500
build=1

usage() {
  cat <<EOF
Usage: scripts/demo.sh [--no-build] [--build-dir DIR] [--udp-port N] [--tcp-port N]

Runs a four-device posp2p venue on loopback and narrates what happens:
  main POS   127.0.0.10      tablet-1   127.0.0.11
  tablet-2   127.0.0.12      kitchen    127.0.0.13 (KDS)
1. the clients find the main POS by UDP discovery (broadcast to
   127.255.255.255, never to a real network) and connect to it;
2. the main POS sends an order to tablet-1, which acknowledges it;
3. tablet-1 sends an order to the kitchen display, relayed by the main POS;
4. the main POS broadcasts an order-status update to every client.
Heartbeats are compressed to ${heartbeat_ms} ms. Takes a few seconds.

Options:
  --no-build        do not build; use the existing posp2p-peer
  --build-dir DIR   build tree (default: build/release, the "release" preset;
                    env POSP2P_DEMO_BUILD_DIR)
  --udp-port N      discovery port (default 8765)
  --tcp-port N      data port of every device (default 8766)
  -h, --help        this text

Exit status: 0 if every step happened within its deadline, 1 if one did not
(the message says which), 2 for a usage error.
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --no-build) build=0 ;;
    --build-dir) [ $# -ge 2 ] || { echo "demo: --build-dir needs a value" >&2; exit 2; }
                 build_dir=$2; shift ;;
    --udp-port) [ $# -ge 2 ] || { echo "demo: --udp-port needs a value" >&2; exit 2; }
                udp_port=$2; shift ;;
    --tcp-port) [ $# -ge 2 ] || { echo "demo: --tcp-port needs a value" >&2; exit 2; }
                tcp_port=$2; shift ;;
    *) echo "demo: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for p in "$udp_port" "$tcp_port"; do
  case "$p" in ''|*[!0-9]*) echo "demo: '$p' is not a port number" >&2; exit 2 ;; esac
  if [ "$p" -lt 1 ] || [ "$p" -gt 65535 ]; then
    echo "demo: port $p out of range" >&2; exit 2
  fi
done

peer="$build_dir/sim/peer/posp2p-peer"
if [ "$build" = 1 ]; then
  bash "$root/scripts/install-deps.sh"
  if [ ! -f "$build_dir/build.ninja" ] && [ ! -f "$build_dir/Makefile" ]; then
    echo "demo: configuring the release build in $build_dir ..."
    if [ "$build_dir" = "$root/build/release" ]; then
      (cd "$root" && cmake --preset release >/dev/null)
    else
      cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
    fi
  fi
  echo "demo: building posp2p-peer ..."
  if ! log=$(cmake --build "$build_dir" --target posp2p-peer 2>&1); then
    echo "$log" | tail -n 30 >&2
    echo "demo: build failed" >&2
    exit 1
  fi
fi
if [ ! -x "$peer" ]; then
  echo "demo: $peer not found (build it, or drop --no-build)" >&2
  exit 1
fi

# Every daemon the driver starts is listed in $work/pids; whatever happens
# (success, failure, Ctrl-C), the EXIT trap makes sure none is left running.
work=$(mktemp -d "${TMPDIR:-/tmp}/posp2p-demo.XXXXXX")
cleanup() {
  local pid
  if [ -f "$work/pids" ]; then
    while read -r pid; do
      [ -n "$pid" ] || continue
      if [ -r "/proc/$pid/cmdline" ] &&
         tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q posp2p-peer; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done < "$work/pids"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export POSP2P_DEMO_PEER=$peer POSP2P_DEMO_WORK=$work POSP2P_DEMO_UDP=$udp_port \
       POSP2P_DEMO_TCP=$tcp_port POSP2P_DEMO_HB=$heartbeat_ms \
       POSP2P_DEMO_TESTS=$root/sim/tests
/usr/bin/python3 - <<'PY'
import os
import sys
import time

sys.path.insert(0, os.environ["POSP2P_DEMO_TESTS"])
from peerctl import Peer, PeerError, stop_all  # noqa: E402

PEER = os.environ["POSP2P_DEMO_PEER"]
WORK = os.environ["POSP2P_DEMO_WORK"]
UDP = os.environ["POSP2P_DEMO_UDP"]
TCP = os.environ["POSP2P_DEMO_TCP"]
HB = int(os.environ["POSP2P_DEMO_HB"])
STEP = 10.0  # seconds allowed for each step
T0 = time.monotonic()

DEVICES = [("main POS", "main", "mainPOS", "127.0.0.10"),
           ("tablet-1", "tablet-1", "orderingTablet", "127.0.0.11"),
           ("tablet-2", "tablet-2", "orderingTablet", "127.0.0.12"),
           ("kitchen", "kitchen", "kds", "127.0.0.13")]


class StepFailed(Exception):
    pass


def say(text):
    print("[%5.2fs] %s" % (time.monotonic() - T0, text), flush=True)


def short(uuid):
    return uuid[:8]


def step(what, fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except PeerError as e:
        raise StepFailed("%s did not happen within %.0f s\n%s" %
                         (what, STEP, str(e).strip()[-1500:]))


def money(x):
    return "%.2f" % x


peers, by = [], {}
results = {}
try:
    print("posp2p demo: four devices on loopback, UDP discovery port %s, "
          "heartbeat %d ms" % (UDP, HB))
    for label, name, dtype, ip in DEVICES:
        args = ["--name", name, "--type", dtype, "--bind", ip, "--tcp-port", TCP,
                "--udp-port", UDP, "--state-dir", "none", "--log-level", "error",
                "--heartbeat-ms", str(HB), "--timeout-ms", str(HB * 6),
                "--announce-ms", "0"]
        if dtype != "mainPOS":
            args += ["--discover", "--reconnect-ms", "250"]
        try:
            p = Peer(*args, name=label, binary=PEER, ready_timeout=STEP,
                     env={"ASAN_OPTIONS": "detect_leaks=1"})
        except PeerError as e:
            raise StepFailed("%s did not start\n%s" % (label, str(e).strip()[-800:]))
        peers.append(p)
        with open(os.path.join(WORK, "pids"), "a") as f:
            f.write("%d\n" % p.pid)
        by[name] = p
        say("started %-9s %-15s %s:%d  id %s" % (label, "(" + dtype + ")", ip,
                                                  p.tcp_port, short(p.device_id)))
    main, tab1, tab2, kds = by["main"], by["tablet-1"], by["tablet-2"], by["kitchen"]
    clients = [tab1, tab2, kds]

    # 1. Discovery: each client broadcast a REQUEST when it started; the
    # main POS answered by unicast; the client connected and shook hands.
    print("\n1. Discovery (UDP broadcast to 127.255.255.255:%s)" % UDP)
    for c in clients:
        ev = step("%s discovering the main POS" % c.name, c.wait_event, "device",
                  timeout=STEP, device__id=main.device_id)
        d = ev["device"]
        say("%-8s found the main POS %s at %s:%d" % (c.name, short(d["id"]),
                                                    d["addr"], d["port"]))
    for c in clients:
        step("%s connecting to the main POS" % c.name, c.wait_event, "conn_ready",
             timeout=STEP, device__id=main.device_id)
        step("the main POS accepting %s" % c.name, main.wait_event, "conn_ready",
             timeout=STEP, device__id=c.device_id)
        say("%-8s connected to the main POS (v2 handshake done)" % c.name)
    devs = step("the main POS's discovery", main.call, "discover", timeout_ms=500,
                timeout=STEP)["devices"]
    say("main POS discovery reply lists %d devices:" % len(devs))
    for d in sorted(devs, key=lambda d: d["addr"]):
        print("           %-9s %-15s %s:%d  %s" % (d["name"], d["type"], d["addr"],
                                                d["port"], d["status"]))
    results["discovery"] = "%d/3 clients connected" % len(
        [d for d in devs if d["status"] == "connected"])

    # 2. An order from the main POS to tablet-1, acknowledged end to end.
    print("\n2. Order: main POS -> tablet-1")
    order = {"orderId": "A-1001",
             "items": [{"productId": "pho", "productName": "Pho bo", "price": 12.5,
                        "quantity": 2, "modifiers": ["no onion"], "variant": "large",
                        "notes": None, "discountPerItem": None},
                       {"productId": "tea", "productName": "Iced tea", "price": 3.2,
                        "quantity": 1, "modifiers": [], "variant": None,
                        "notes": "less ice", "discountPerItem": None}],
             "subtotal": 28.2, "tax": 2.82, "serviceCharge": None, "discount": None,
             "total": 31.02, "orderStatus": "pending", "destination": "orderingTablet",
             "tableNumber": 12, "customerName": "Linh", "specialInstructions": None,
             "targetDeliveryTime": None}
    t_send = time.monotonic()
    r = step("sending the order", main.call, "send_order", to=tab1.device_id,
             order=order, timeout=STEP)
    mid = r["message_id"]
    say("main POS sent orderForward %s (table 12, 2 items, total %s), message %s"
        % (order["orderId"], money(order["total"]), short(mid)))
    got = step("tablet-1 receiving the order", tab1.wait_event, "message",
               timeout=STEP, message_id=mid)
    pl = got["payload"]
    say("tablet-1 delivered it: %s" % ", ".join(
        "%dx %s @ %s" % (i["quantity"], i["productName"], money(i["price"]))
        for i in pl["items"]))
    ack = step("the acknowledgement", main.wait_event, "ack", timeout=STEP,
               message_id=mid)
    ack_ms = (time.monotonic() - t_send) * 1000
    say("main POS got tablet-1's acknowledgement (attempt %d, %.0f ms after sending)"
        % (ack["attempts"], ack_ms))
    rec = [o for o in main.call("orders")["orders"] if o["message_id"] == mid][0]
    say("main POS sent-orders list: %s is %s by %s" % (
        rec["order_id"], rec["state"], ", ".join(short(x) for x in rec["acked_by"])))
    results["order"] = "%s acked by tablet-1 in %.0f ms" % (order["orderId"], ack_ms)

    # 3. tablet-1 -> KDS: clients talk only to the main POS, which relays.
    print("\n3. Relay: tablet-1 -> kitchen, through the main POS")
    relayed = main.stats()["relayed"]
    kitchen_order = dict(order, orderId="A-1002", items=order["items"][:1],
                         subtotal=25.0, tax=2.5, total=27.5,
                         destination="kitchenDisplay", customerName=None)
    r = step("tablet-1 sending to the kitchen", tab1.call, "send_order",
             to=kds.device_id, order=kitchen_order, timeout=STEP)
    mid = r["message_id"]
    say("tablet-1 sent orderForward %s to the kitchen (%s), message %s"
        % ("A-1002", short(kds.device_id), short(mid)))
    got = step("the kitchen receiving it", kds.wait_event, "message",
               timeout=STEP, message_id=mid)
    say("kitchen delivered it; originator %s = tablet-1 (unchanged by the relay)"
        % short(got["from"]))
    ack = step("the kitchen's acknowledgement", tab1.wait_event, "ack",
               timeout=STEP, message_id=mid)
    who = "kitchen" if ack["device_id"] == kds.device_id else short(ack["device_id"])
    n_rel = main.stats()["relayed"] - relayed
    say("tablet-1 got the acknowledgement from the %s; the main POS relayed %d "
        "frames (order + ack)" % (who, n_rel))
    if who != "kitchen" or n_rel < 2:
        raise StepFailed("relay: expected the kitchen's ack through the main POS")
    results["relay"] = "tablet-1 -> main POS -> kitchen, acked end to end"

    # 4. Status broadcast from the main POS to every client.
    print("\n4. Status broadcast: main POS -> everyone")
    r = step("the status broadcast", main.call, "send_status", order_id="A-1001",
             status="preparing", reason="in the wok", estimated_time=600,
             timeout=STEP)
    mid = r["message_id"]
    say("main POS broadcast orderStatus A-1001 -> preparing (sequence %d)"
        % r["sequence"])
    for c in clients:
        got = step("%s receiving the status" % c.name, c.wait_event, "message",
                   timeout=STEP, message_id=mid)
        step("%s acknowledging the status" % c.name, main.wait_event, "ack",
             timeout=STEP, message_id=mid, device_id=c.device_id)
        pl = got["payload"]
        say("%-8s got it: %s, \"%s\", ready in %d min; acknowledged" % (
            c.name, pl["newStatus"], pl["statusReason"], pl["estimatedTime"] // 60))
    results["status"] = "3/3 clients received and acknowledged"

    print("\nShutting down (GOODBYE to every peer) ...")
    for p in reversed(peers):
        rc = p.terminate(timeout=STEP)
        if rc != 0:
            raise StepFailed("%s exited with status %s\n%s" % (
                p.name, rc, p.stderr_text()[-800:]))
    say("all four devices stopped cleanly")

    print("\nSummary")
    print("  devices    4 on 127.0.0.10-13 (main POS, 2 tablets, kitchen display)")
    for k in ("discovery", "order", "relay", "status"):
        print("  %-10s %s" % (k, results[k]))
    print("  result     OK in %.1f s" % (time.monotonic() - T0))
except StepFailed as e:
    print("\ndemo: FAILED: %s" % e, file=sys.stderr)
    sys.exit(1)
except KeyboardInterrupt:
    print("\ndemo: interrupted", file=sys.stderr)
    sys.exit(130)
finally:
    stop_all(peers)
PY
