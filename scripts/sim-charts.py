#!/usr/bin/python3
"""Turn a posp2p-sim JSON report into PNG charts.

    /usr/bin/python3 scripts/sim-charts.py report.json [--out DIR]

Writes into DIR (default: next to the report, <report>-charts/):
  latency.png    latency percentiles (p50 .. p99.99, max) of every measured
                 path, log scale, measured from the intended send time
  orders.png     orders sent and acknowledged per second, with the p99 and
                 max order-ack latency of each second on a second axis
  connected.png  connected clients and running devices over time
Fault windows and traffic phases from the configuration are shaded.
Needs Debian's matplotlib (use /usr/bin/python3).
"""

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PATHS = [
    ("order_ack", "order acked"),
    ("order_to_kitchen", "order at kitchen"),
    ("status", "status delivered"),
    ("cart_ack", "cart acked"),
    ("message_ack", "any message acked"),
    ("reconnect", "reconnect"),
]
QUANTS = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99_9", "p99.9"),
          ("p99_99", "p99.99"), ("max", "max")]


def title(rep, what):
    c = rep["config"]
    fleet = c["fleet"]
    n = sum(fleet.values())
    return "%s: %s (%d devices, seed %s)" % (c["name"], what, n, c["seed"])


def shade(ax, rep):
    """Fault windows (red) and phases (blue) from the configuration."""
    c = rep["config"]
    end = c["duration_ms"] / 1000.0
    for ph in c.get("phases", []):
        ax.axvspan(ph["start_ms"] / 1000.0, ph["end_ms"] / 1000.0, color="tab:blue",
                   alpha=0.06)
    for f in c.get("faults", []):
        s = f["start_ms"] / 1000.0
        if f["kind"] in ("kill", "main_restart"):
            # A kill is an instant; shade the downtime (to the end if none).
            e = s + f["restart_after_ms"] / 1000.0 if "restart_after_ms" in f else end
        else:
            e = f.get("end_ms", c["duration_ms"]) / 1000.0
        ax.axvspan(s, max(e, s + 0.2), color="tab:red", alpha=0.08)
        ax.text(s, 1.0, f["name"], transform=ax.get_xaxis_transform(), fontsize=7,
                va="top", color="tab:red")


def latency_chart(rep, path):
    lat = rep["latency"]
    names = [(k, label) for k, label in PATHS if lat.get(k, {}).get("count", 0) > 0]
    fig, ax = plt.subplots(figsize=(10, 5))
    if not names:
        ax.text(0.5, 0.5, "no latency samples", ha="center", va="center")
    width = 0.8 / len(QUANTS)
    for qi, (q, qlabel) in enumerate(QUANTS):
        xs, ys = [], []
        for i, (k, _) in enumerate(names):
            xs.append(i + (qi - len(QUANTS) / 2) * width + width / 2)
            ys.append(max(lat[k].get(q, 0), 1) / 1000.0)
        ax.bar(xs, ys, width=width, label=qlabel)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(["%s\n(n=%d)" % (label, lat[k]["count"]) for k, label in names],
                       fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms from the intended send time")
    ax.set_title(title(rep, "latency percentiles"))
    ax.legend(fontsize=8, ncol=len(QUANTS))
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def orders_chart(rep, path):
    ts = rep["timeseries"]
    t = ts["t_s"]
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.plot(t, ts["orders_sent_per_s"], label="orders sent/s", color="tab:blue")
    ax.plot(t, ts["orders_acked_per_s"], label="orders acked/s", color="tab:green")
    ax.set_xlabel("run time (s)")
    ax.set_ylabel("orders per second")
    shade(ax, rep)
    ax2 = ax.twinx()
    p99 = [v if v is not None else float("nan") for v in ts["order_ack_p99_ms"]]
    mx = [v if v is not None else float("nan") for v in ts["order_ack_max_ms"]]
    ax2.plot(t, p99, label="order ack p99 (ms)", color="tab:orange", linestyle="--")
    ax2.plot(t, mx, label="order ack max (ms)", color="tab:red", linestyle=":")
    ax2.set_ylabel("latency (ms)")
    if any(v == v and v > 0 for v in mx):
        ax2.set_yscale("log")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    ax.set_title(title(rep, "orders per second"))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def connected_chart(rep, path):
    ts = rep["timeseries"]
    t = ts["t_s"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(t, ts["devices_up"], label="devices running", color="tab:gray")
    ax.plot(t, ts["connected"], label="clients connected to the main POS", color="tab:blue")
    ax.set_xlabel("run time (s)")
    ax.set_ylabel("devices")
    ax.set_ylim(bottom=0)
    shade(ax, rep)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title(rep, "connected devices"))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", help="JSON report written by posp2p-sim --report")
    ap.add_argument("--out", help="output directory (default: <report>-charts)")
    a = ap.parse_args(argv)
    try:
        with open(a.report) as f:
            rep = json.load(f)
    except (OSError, ValueError) as e:
        print("sim-charts: %s: %s" % (a.report, e), file=sys.stderr)
        return 2
    if rep.get("tool") != "posp2p-sim":
        print("sim-charts: %s: not a posp2p-sim report" % a.report, file=sys.stderr)
        return 2
    out = a.out or os.path.splitext(a.report)[0] + "-charts"
    os.makedirs(out, exist_ok=True)
    latency_chart(rep, os.path.join(out, "latency.png"))
    orders_chart(rep, os.path.join(out, "orders.png"))
    connected_chart(rep, os.path.join(out, "connected.png"))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
