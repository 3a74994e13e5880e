"""kill -9 of the main POS while orders are flowing to two tablets; restart
with the same id and state directory; every order is delivered exactly once
(issue 3, sections 4 and 6).

Unlike test_crash_outbox.py (orders queued while the receiver is frozen,
then one kill), here a sender thread keeps issuing orders to alternating
tablets while the main POS is killed, so at the moment of the kill some
orders are acknowledged, some are in flight, one send may be in doubt (the
command was written, no reply came) and the rest were never issued.
Tablet-2 is frozen (SIGSTOP) for the whole first half so that the crash
certainly strands unacknowledged orders in the outbox; when it runs again
it reads the orders still buffered on its dead connection, delivers them,
and its acknowledgements are lost with that connection, so the restarted
main POS retransmits orders the tablet already delivered: duplicate
suppression must hold across connections.

The application's side is the test: after the restart it resends only the
orders that were never accepted (neither restored from the outbox nor
delivered), as a POS would after asking what the main POS still holds.
Deliveries are counted by message id over each tablet's whole output.
"""

import collections
import os
import signal
import threading
import uuid

import pytest

from peerctl import Peer, PeerError, free_port, peer_binary, stop_all

pytestmark = pytest.mark.skipif(not os.path.exists(peer_binary()),
                                reason="posp2p-peer not built at " + peer_binary())

N_ORDERS = 200  # far more than can be issued between the trigger and the kill
KILL_AFTER_ACKS = 12   # tablet-1 acknowledgements seen before the kill
WAIT = 30.0


def order(i):
    return {
        "orderId": "M-%03d" % i,
        "items": [{"productId": "p%d" % i, "productName": "Banh mi",
                   "price": 6.5, "quantity": 1 + i % 3, "modifiers": [],
                   "variant": None, "notes": None, "discountPerItem": None}],
        "subtotal": 6.5 * (1 + i % 3), "tax": None, "serviceCharge": None,
        "discount": None, "total": 6.5 * (1 + i % 3), "orderStatus": "pending",
        "destination": "orderingTablet", "tableNumber": i, "customerName": None,
        "specialInstructions": None, "targetDeliveryTime": None,
    }


class Sender(threading.Thread):
    """Issues send_order for orders start..N_ORDERS-1 to alternating
    tablets, one after the other (each waits for its reply), until a send
    fails because the main POS died."""

    def __init__(self, main, tablets, start=0):
        super().__init__(daemon=True)
        self.main, self.tablets, self.start_at = main, tablets, start
        self.accepted = {}     # order index -> message id
        self.in_doubt = None   # index whose reply never came
        self.next = start      # first index not issued
        self.error = None
        # If this thread ever runs far ahead of the one that kills the main
        # POS (a starved test process), it waits here: the kill must come
        # while orders are still being issued.
        self.killed = threading.Event()

    def run(self):
        for i in range(self.start_at, N_ORDERS):
            if i == N_ORDERS // 2:
                self.killed.wait(WAIT)
            self.next = i
            to = self.tablets[i % 2].device_id
            try:
                r = self.main.call("send_order", check=False, to=to, order=order(i),
                                   timeout=WAIT)
            except PeerError as e:   # the process died: no reply
                self.in_doubt = i
                self.next = i + 1
                self.error = e
                return
            if not r["ok"]:          # refused: a bug, not the crash
                self.next = i
                self.error = "order %d refused: %s %s" % (i, r["error"], r["text"])
                return
            self.accepted[i] = r["message_id"]
        self.next = N_ORDERS


@pytest.mark.req("ACK-7", "ACK-18", "ACK-19", "ACK-20", "ACK-23", "TOPO-7",
                 "CONN-22", "ROUTE-8")
def test_kill9_main_mid_stream_delivers_every_order_once(tmp_path, addrs):
    main_ip, tab_ips = addrs.ip(0), [addrs.ip(1), addrs.ip(2)]
    tcp = free_port("tcp", main_ip)
    udp = free_port("udp")
    main_id = str(uuid.uuid4())
    common = ["--udp-port", str(udp), "--announce-ms", "0",
              "--heartbeat-ms", "500", "--timeout-ms", "30000",
              "--ack-timeout-ms", "300", "--max-retries", "200",
              "--log-level", "warn"]

    def start_main():
        # Same id, state directory and port each time (TOPO-7).
        return Peer("--name", "main", "--type", "mainPOS", "--id", main_id,
                    "--bind", main_ip, "--tcp-port", str(tcp),
                    "--state-dir", str(tmp_path / "main"), *common, name="main")

    peers = []
    try:
        main = start_main()
        peers.append(main)
        tabs = []
        for n, ip in enumerate(tab_ips, 1):
            t = Peer("--name", "tablet-%d" % n, "--type", "orderingTablet",
                     "--bind", ip, "--tcp-port", "0", "--state-dir", "none",
                     "--connect", "%s:%d" % (main_ip, tcp), "--reconnect-ms", "100",
                     *common, name="tablet-%d" % n)
            peers.append(t)
            tabs.append(t)
        for t in tabs:
            main.wait_event("conn_ready", timeout=WAIT, device__id=t.device_id)
            t.wait_event("conn_ready", timeout=WAIT, device__id=main_id)

        # ---- first half: orders flowing, tablet-2 frozen, then kill -9 ----
        tabs[1].signal(signal.SIGSTOP)
        sender = Sender(main, tabs)
        sender.start()
        main.wait_for(lambda: len(main.events("ack", device_id=tabs[0].device_id))
                      >= KILL_AFTER_ACKS, timeout=WAIT,
                      what="%d acks from tablet-1" % KILL_AFTER_ACKS)
        assert sender.is_alive(), "sender stopped before the kill: %s" % sender.error
        assert main.kill() == -signal.SIGKILL
        sender.killed.set()
        sender.join(WAIT)
        assert not sender.is_alive()
        acked_before = {e["message_id"] for e in main.events("ack")}

        # ---- restart: the outbox comes back ----
        main2 = start_main()
        peers.append(main2)
        restored = main2.call("orders")["orders"]
        assert main2.ready["outbox"] == len(restored) > 0, \
            "the crash left nothing unacknowledged: not a mid-stream crash"
        assert all(o["restored"] and o["state"] == "pending" for o in restored)
        restored_ids = {o["message_id"] for o in restored}
        # Everything restored was accepted before the crash (or is the one
        # in doubt) and was not yet acknowledged.
        doubt_oid = order(sender.in_doubt)["orderId"] if sender.in_doubt is not None else None
        for o in restored:
            assert o["message_id"] in sender.accepted.values() or o["order_id"] == doubt_oid
            assert o["message_id"] not in acked_before

        tabs[1].signal(signal.SIGCONT)
        for t in tabs:
            main2.wait_event("conn_ready", timeout=WAIT, device__id=t.device_id)

        # ---- the application resends what was never accepted ----
        def delivered_order_ids():
            return {e["payload"]["orderId"] for t in tabs
                    for e in t.events("message") if e["type"] == "orderForward"}

        restored_oids = {o["order_id"] for o in restored}
        resend = list(range(sender.next, N_ORDERS))
        if sender.in_doubt is not None:
            oid = order(sender.in_doubt)["orderId"]
            # Accepted if the restarted main POS restored it or a tablet has
            # it (then it was acknowledged before the crash).
            if oid not in restored_oids and oid not in delivered_order_ids():
                resend.insert(0, sender.in_doubt)
        resent = {}
        for i in resend:
            r = main2.call("send_order", to=tabs[i % 2].device_id, order=order(i),
                           timeout=WAIT)
            resent[i] = r["message_id"]

        # ---- every order delivered; the outbox drains ----
        want_oids = {order(i)["orderId"] for i in range(N_ORDERS)}
        main2.wait_for(lambda: delivered_order_ids() >= want_oids, timeout=WAIT,
                       what="delivery of every order")
        main2.wait_for(lambda: main2.stats()["outbox"] == 0, timeout=WAIT,
                       what="an empty outbox (every order acknowledged)")

        # Exactly once, by message id, over each tablet's whole output, and
        # each order to the tablet it was addressed to.
        by_mid = collections.Counter()
        by_oid = collections.Counter()
        for n, t in enumerate(tabs):
            for e in t.events("message"):
                if e["type"] != "orderForward":
                    continue
                by_mid[e["message_id"]] += 1
                by_oid[e["payload"]["orderId"]] += 1
                i = int(e["payload"]["orderId"][2:])
                assert i % 2 == n, "order %d delivered to tablet-%d" % (i, n + 1)
                assert e["from"] == main_id
        dup_mids = {k: v for k, v in by_mid.items() if v != 1}
        dup_oids = {k: v for k, v in by_oid.items() if v != 1}
        assert not dup_mids, "delivered more than once: %s" % dup_mids
        assert not dup_oids, "orders delivered twice: %s" % dup_oids
        assert set(by_oid) == want_oids
        expected_mids = set(sender.accepted.values()) | restored_ids | set(resent.values())
        assert set(by_mid) == expected_mids

        # Tablet-2 delivered its backlog in send order (ROUTE-8).
        t2 = [int(e["payload"]["orderId"][2:]) for e in tabs[1].events("message")
              if e["type"] == "orderForward"]
        first_half = [i for i in t2 if i < sender.next]
        assert first_half == sorted(first_half)

        print("\naccepted before kill %d, in doubt %s, restored %d, resent %d, "
              "tablet-2 duplicates suppressed %d" % (
                  len(sender.accepted), sender.in_doubt, len(restored), len(resent),
                  tabs[1].stats()["duplicates"]))
        for p in (main2, *tabs):
            assert p.terminate() == 0, p.stderr_text()[-2000:]
    finally:
        for t in peers:
            t.signal(signal.SIGCONT)
        stop_all(peers)
