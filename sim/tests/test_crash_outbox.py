"""Nothing lost across a crash (issue 3 section 4).

Two real posp2p-peer processes on loopback with SQLite state directories.
kill -9 is made to hit at the worst moment deterministically with SIGSTOP:
a stopped tablet cannot acknowledge anything, so every order the main POS
accepted is unacknowledged (in its outbox) when the main POS dies; and a
tablet that delivers while the main POS is dead cannot get its acks through.

Run with: POSP2P_BUILD_DIR=<build> /usr/bin/python3 -m pytest sim/tests/test_crash_outbox.py
"""

import collections
import os
import signal
import uuid

import pytest

from peerctl import Peer, free_port, loopback_ip, peer_binary, stop_all

N_ORDERS = 20

pytestmark = pytest.mark.skipif(not os.path.exists(peer_binary()),
                                reason="posp2p-peer not built at " + peer_binary())


def order(i):
    """A legacy-shaped orderForward payload."""
    return {
        "orderId": "order-%03d" % i,
        "items": [{"productId": "p%d" % i, "productName": "Flat white",
                   "price": 3.5, "quantity": 1 + i % 3, "modifiers": ["oat"],
                   "variant": None, "notes": None, "discountPerItem": None}],
        "subtotal": 3.5 * (1 + i % 3), "tax": None, "serviceCharge": None,
        "discount": None, "total": 3.5 * (1 + i % 3), "orderStatus": "pending",
        "destination": "orderingTablet", "tableNumber": i,
        "customerName": None, "specialInstructions": None,
        "targetDeliveryTime": None,
    }


class Net:
    """Addresses, ports, ids and state directories of one test."""

    def __init__(self, tmp_path):
        self.main_ip = loopback_ip()
        self.tab_ip = loopback_ip()
        self.tcp = free_port("tcp", self.main_ip)
        self.udp = free_port("udp")
        self.main_id = str(uuid.uuid4())
        self.tab_id = str(uuid.uuid4())
        self.main_dir = str(tmp_path / "main")
        self.tab_dir = str(tmp_path / "tablet")

    def common(self):
        return ["--udp-port", str(self.udp), "--announce-ms", "0",
                "--heartbeat-ms", "1000", "--timeout-ms", "30000",
                "--ack-timeout-ms", "300", "--max-retries", "100",
                "--reconnect-ms", "100", "--log-level", "warn"]

    def main(self):
        return Peer("--name", "main", "--type", "mainPOS", "--id", self.main_id,
                    "--bind", self.main_ip, "--tcp-port", str(self.tcp),
                    "--state-dir", self.main_dir, *self.common(), name="main")

    def tablet(self):
        return Peer("--name", "tablet", "--type", "orderingTablet",
                    "--id", self.tab_id, "--bind", self.tab_ip, "--tcp-port", "0",
                    "--state-dir", self.tab_dir,
                    "--connect", "%s:%d" % (self.main_ip, self.tcp),
                    *self.common(), name="tablet")


def wait_connected(main, tab, since_main=0, since_tab=0):
    main.wait_event("conn_ready", since=since_main, timeout=15,
                    device__id=tab.device_id)
    tab.wait_event("conn_ready", since=since_tab, timeout=15,
                   device__id=main.device_id)


def send_orders(main, tab_id, n):
    ids = []
    for i in range(n):
        r = main.call("send_order", to=tab_id, order=order(i))
        ids.append(r["message_id"])
    return ids


def deliveries(peers):
    """message_id -> number of orderForward deliveries, over all peers."""
    c = collections.Counter()
    for p in peers:
        for e in p.events("message", type="orderForward"):
            c[e["message_id"]] += 1
    return c


def test_kill9_main_with_unacked_orders_resends_each_once(tmp_path):
    """The main POS is killed with N orders accepted but unacknowledged; after
    a restart with the same --id and --state-dir it retransmits them from the
    SQLite outbox, and the tablet delivers each exactly once."""
    net = Net(tmp_path)
    peers = []
    try:
        main = net.main()
        peers.append(main)
        tab = net.tablet()
        peers.append(tab)
        wait_connected(main, tab)

        tab.signal(signal.SIGSTOP)            # no ack can come back now
        ids = send_orders(main, net.tab_id, N_ORDERS)
        assert len(set(ids)) == N_ORDERS
        assert main.stats()["outbox"] == N_ORDERS
        assert main.kill() == -signal.SIGKILL

        main2 = net.main()                    # same id, state dir and port
        peers.append(main2)
        assert main2.ready["outbox"] == N_ORDERS
        restored = main2.call("orders")["orders"]
        assert sorted(o["message_id"] for o in restored) == sorted(ids)
        assert all(o["restored"] and o["state"] == "pending" for o in restored)

        tab.signal(signal.SIGCONT)
        acked = set()

        def all_acked():
            for e in main2.events("ack", device_id=net.tab_id):
                acked.add(e["message_id"])
            return acked >= set(ids)
        main2.wait_for(all_acked, timeout=30, what="acks for every order")

        got = deliveries([tab])
        assert set(got) == set(ids), "orders lost: %s" % (set(ids) - set(got))
        assert all(n == 1 for n in got.values()), "duplicates: %s" % got
        # The payload survived the crash intact.
        ev = tab.events("message", message_id=ids[3])[0]
        assert ev["payload"]["orderId"] == "order-003"
        assert ev["payload"]["items"][0]["price"] == 3.5
        assert main2.stats()["outbox"] == 0
        assert all(o["state"] == "acked" for o in main2.call("orders")["orders"])

        assert main2.terminate() == 0
        assert tab.terminate() == 0
    finally:
        stop_all(peers)


def test_kill9_both_receiver_dedup_survives(tmp_path):
    """The tablet delivers N orders and dies before its acks can reach the
    (dead) main POS. After both restart, the main POS retransmits all N and
    the tablet's restored dedup table keeps it from delivering any again."""
    net = Net(tmp_path)
    peers = []
    try:
        main = net.main()
        peers.append(main)
        tab = net.tablet()
        peers.append(tab)
        wait_connected(main, tab)

        tab.signal(signal.SIGSTOP)
        ids = send_orders(main, net.tab_id, N_ORDERS)
        # A retransmission of every order means every original went out
        # (the socket buffers of the stopped tablet hold them).
        main.wait_for(lambda: main.stats()["retransmissions"] >= N_ORDERS,
                      timeout=15, what="a retransmission of every order")
        assert main.kill() == -signal.SIGKILL  # outbox holds all N

        tab.signal(signal.SIGCONT)             # reads the N orders, main is gone
        tab.wait_for(lambda: set(deliveries([tab])) >= set(ids), timeout=15,
                     what="first delivery of every order")
        assert tab.kill() == -signal.SIGKILL   # dedup ids are on disk, acks lost

        main2 = net.main()
        peers.append(main2)
        assert main2.ready["outbox"] == N_ORDERS
        tab2 = net.tablet()
        peers.append(tab2)
        acked = set()

        def all_acked():
            for e in main2.events("ack", device_id=net.tab_id):
                acked.add(e["message_id"])
            return acked >= set(ids)
        main2.wait_for(all_acked, timeout=30, what="acks for every order")

        got = deliveries([tab, tab2])
        assert set(got) == set(ids)
        assert all(n == 1 for n in got.values()), "delivered twice: %s" % {
            k: v for k, v in got.items() if v != 1}
        assert tab2.stats()["duplicates"] >= N_ORDERS
        assert main2.terminate() == 0
        assert tab2.terminate() == 0
    finally:
        stop_all(peers)
