#!/usr/bin/python3
"""Turn posp2p benchmark JSON into PNG charts (issue 7, section 4).

usage: scripts/bench-charts.py RESULTS_DIR [--out DIR]

Reads RESULTS_DIR/codec.json, scaling.json and relay.json (whichever exist,
as written by scripts/bench.sh) and writes PNG files next to them (or into
--out). Needs Debian's python3-matplotlib; run it with /usr/bin/python3.

Codec charts (schema "posp2p-bench-codec/1", see bench/README.md):
  codec_decode_ns.png     decode ns/message per message size, ours vs Google
  codec_encode_ns.png     encode ns/message per message size, ours vs Google
  codec_ratio.png         our time / Google's time per message size
  codec_v2_vs_legacy.png  v2 protobuf wire vs legacy JSON wire, ns/message
  codec_framing.png       framing + decode frames/s per stream, with the goal

Fleet charts, for the benchmarks still to come. Their JSON shapes are fixed
here and in bench/README.md so that the benchmarks can be written against
them:

  scaling.json  {"schema": "posp2p-bench-scaling/1", "benchmark": "scaling",
                 "date", "machine", "build", "config",
                 "points": [{"devices": 1000,
                             "connect_s": STAT,          # all connected + HELLO done
                             "rss_bytes_per_device": N,  # (RSS - baseline) / devices
                             "idle_cpu_percent": N,      # one core = 100, heartbeats only
                             "order_rate_per_s": N,      # offered order rate
                             "ack_latency_us": {"p50": N, "p90": N, "p99": N,
                                                "max": N}}],
                 "goals": {"rss_bytes_per_device": {"value", "goal_max": 4096,
                                                    "met"}}}
  relay.json    {"schema": "posp2p-bench-relay/1", "benchmark": "relay",
                 "date", "machine", "build", "config",
                 "points": [{"tablets": 8, "frame_bytes": 777,
                             "ours_frames_per_s": STAT,
                             "baseline_frames_per_s": STAT,  # raw libuv, same run
                             "ratio": N,                      # ours / baseline
                             "latency_us": {"p50": N, "p99": N}}],
                 "goals": {"relay_vs_raw": {"value", "goal_min": 0.7, "met"}}}

  STAT is {"median": N, "min": N, "max": N}, as in codec.json.

  scaling_cost.png      connect time, memory per device and idle CPU vs fleet size
  scaling_latency.png   ack latency p50/p90/p99 vs fleet size
  relay_ratio.png       relay frames/s, ours and the raw baseline, and the ratio
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MESSAGE_ORDER = ["heartbeat", "ack", "typical_order", "large_order"]
MESSAGE_LABEL = {"heartbeat": "heartbeat", "ack": "ack",
                 "typical_order": "typical order\n(10 items)",
                 "large_order": "large order\n(200 items)"}


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def subtitle(doc):
    m, b = doc.get("machine", {}), doc.get("build", {})
    s = (f"{m.get('cpu_model', '?')}, {doc.get('date', '?')}, "
         f"{b.get('build_type', '?')} {b.get('c_flags', '')}")
    if not b.get("representative", True):
        s += "  [NOT REPRESENTATIVE: unoptimized or sanitized build]"
    if doc.get("config", {}).get("smoke"):
        s += "  [SMOKE RUN: numbers meaningless]"
    return s


def save(fig, out_dir, name, written):
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)


def grouped_bars(ax, groups, series, values, log=True, fmt="{:.0f}"):
    """values[s][g] -> bar height (None: no bar)."""
    n = len(series)
    width = 0.8 / max(n, 1)
    top = 0
    for i, s in enumerate(series):
        xs, hs = [], []
        for j, g in enumerate(groups):
            v = values[s].get(g)
            if v is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                hs.append(v)
        ax.bar(xs, hs, width, label=s)
        top = max([top] + hs)
        for x, h in zip(xs, hs):
            ax.annotate(fmt.format(h), (x, h), ha="center", va="bottom",
                        fontsize=7, rotation=90, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([MESSAGE_LABEL.get(g, g) for g in groups])
    if log:
        ax.set_yscale("log")
        if top > 0:
            ax.set_ylim(top=top * 6)  # room for the value labels
    elif top > 0:
        ax.set_ylim(top=top * 1.25)
    ax.grid(axis="y", alpha=0.3)
    legend_below(ax)


def legend_below(ax):
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14),
              ncol=3, frameon=False)


def result_index(doc):
    idx = {}
    for r in doc["results"]:
        idx[(r["message"], r["wire"], r["op"], r["impl"], r["variant"])] = r
    return idx


# ---- Codec ------------------------------------------------------------------

def chart_codec(doc, out_dir, written):
    idx = result_index(doc)
    msgs = [m for m in MESSAGE_ORDER
            if any(k[0] == m for k in idx)]

    def ns(m, wire, op, impl, var):
        r = idx.get((m, wire, op, impl, var))
        return r["ns_per_msg"]["median"] if r else None

    # Decode: ours vs Google.
    series = {
        "posp2p, arena": ("v2", "decode", "posp2p", "arena"),
        "posp2p, malloc": ("v2", "decode", "posp2p", "malloc"),
        "Google C++, arena": ("v2", "decode", "google-cpp", "arena"),
        "Google C++, reused message": ("v2", "decode", "google-cpp", "reuse"),
    }
    fig, ax = plt.subplots(figsize=(9, 5.5))
    grouped_bars(ax, msgs, list(series),
                 {s: {m: ns(m, *k) for m in msgs} for s, k in series.items()})
    ax.set_ylabel("ns per message (median, log scale)")
    ax.set_title("v2 decode: posp2p vs Google C++ protobuf\n" + subtitle(doc),
                 fontsize=9)
    save(fig, out_dir, "codec_decode_ns.png", written)

    # Encode: ours vs Google.
    series = {
        "posp2p_frame_encode": ("v2", "encode", "posp2p", "frame_encode"),
        "protobuf-c pack only": ("v2", "encode", "protobuf-c", "pack"),
        "Google C++ SerializeToArray": ("v2", "encode", "google-cpp",
                                        "serialize"),
    }
    fig, ax = plt.subplots(figsize=(9, 5.5))
    grouped_bars(ax, msgs, list(series),
                 {s: {m: ns(m, *k) for m in msgs} for s, k in series.items()})
    ax.set_ylabel("ns per message (median, log scale)")
    ax.set_title("v2 encode: posp2p vs Google C++ protobuf\n" + subtitle(doc),
                 fontsize=9)
    save(fig, out_dir, "codec_encode_ns.png", written)

    # Ratios.
    ratios = {}
    for r in doc["ratios"]:
        label = f"{r['op']}: ours {r['ours']} / Google {r['theirs']}"
        ratios.setdefault(label, {})[r["message"]] = r["ours_over_theirs"]
    if ratios:
        fig, ax = plt.subplots(figsize=(9, 5.5))
        grouped_bars(ax, msgs, list(ratios), ratios, log=False, fmt="{:.2f}")
        ax.axhline(1.0, color="black", linewidth=1)
        ax.set_ylabel("our time / Google's time (below 1: we are faster)")
        ax.set_title("posp2p vs Google C++ protobuf, same bytes, same run\n"
                     + subtitle(doc), fontsize=9)
        save(fig, out_dir, "codec_ratio.png", written)

    # v2 vs legacy.
    if doc.get("config", {}).get("legacy_available"):
        series = {
            "v2 decode (arena)": ("v2", "decode", "posp2p", "arena"),
            "legacy decode (arena)": ("legacy", "decode", "posp2p", "arena"),
            "v2 encode": ("v2", "encode", "posp2p", "frame_encode"),
            "legacy encode": ("legacy", "encode", "posp2p", "buf"),
        }
        fig, ax = plt.subplots(figsize=(9, 5.5))
        grouped_bars(ax, msgs, list(series),
                     {s: {m: ns(m, *k) for m in msgs}
                      for s, k in series.items()})
        ax.set_ylabel("ns per message (median, log scale)")
        ax.set_title("v2 protobuf wire vs legacy JSON wire\n" + subtitle(doc),
                     fontsize=9)
        save(fig, out_dir, "codec_v2_vs_legacy.png", written)

    # Framing + decode.
    rows = doc.get("framing", [])
    streams = []
    for r in rows:
        if r["stream"] not in streams:
            streams.append(r["stream"])
    if rows:
        vals = {}
        for r in rows:
            label = f"{r['wire']} {r['impl']} {r['variant']}"
            vals.setdefault(label, {})[r["stream"]] = \
                r["frames_per_s"]["median"]
        fig, ax = plt.subplots(figsize=(10, 6))
        grouped_bars(ax, streams, list(vals), vals, fmt="{:.3g}")
        goal = doc.get("goals", {}).get("small_frames_per_s", {})
        if goal.get("goal_min"):
            ax.axhline(goal["goal_min"], color="red", linestyle="--",
                       linewidth=1, label="goal (small frames)")
            legend_below(ax)
        ax.set_ylabel("frames per second, one core (log scale)")
        ax.set_title("framing + decode over long streams\n" + subtitle(doc),
                     fontsize=9)
        save(fig, out_dir, "codec_framing.png", written)


# ---- Fleet benchmarks (shapes in the module docstring) ---------------------

def chart_scaling(doc, out_dir, written):
    pts = sorted(doc.get("points", []), key=lambda p: p["devices"])
    if not pts:
        return
    n = [p["devices"] for p in pts]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    conn = [p["connect_s"]["median"] for p in pts]
    lo = [p["connect_s"]["median"] - p["connect_s"]["min"] for p in pts]
    hi = [p["connect_s"]["max"] - p["connect_s"]["median"] for p in pts]
    axes[0].errorbar(n, conn, yerr=[lo, hi], marker="o", capsize=3)
    axes[0].set_ylabel("seconds to connect + handshake all")
    axes[1].plot(n, [p["rss_bytes_per_device"] / 1024 for p in pts],
                 marker="o")
    goal = doc.get("goals", {}).get("rss_bytes_per_device", {})
    if goal.get("goal_max"):
        axes[1].axhline(goal["goal_max"] / 1024, color="red", linestyle="--",
                        label="goal")
        axes[1].legend(fontsize=8)
    axes[1].set_ylabel("KiB resident per idle device")
    axes[2].plot(n, [p["idle_cpu_percent"] for p in pts], marker="o")
    axes[2].set_ylabel("idle CPU, % of one core")
    axes[1].set_ylim(bottom=0)
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("virtual devices")
        ax.grid(alpha=0.3)
    fig.suptitle("connection scaling: cost vs fleet size\n" + subtitle(doc),
                 fontsize=9)
    save(fig, out_dir, "scaling_cost.png", written)

    fig, ax = plt.subplots(figsize=(8, 5))
    for q in ("p50", "p90", "p99"):
        ys = [p["ack_latency_us"].get(q) for p in pts]
        if any(y is not None for y in ys):
            ax.plot(n, ys, marker="o", label=q)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("virtual devices")
    ax.set_ylabel("ack latency, microseconds")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("ack latency percentiles at a fixed order rate\n"
                 + subtitle(doc), fontsize=9)
    save(fig, out_dir, "scaling_latency.png", written)


def chart_relay(doc, out_dir, written):
    pts = sorted(doc.get("points", []),
                 key=lambda p: (p["frame_bytes"], p["tablets"]))
    if not pts:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for size in sorted({p["frame_bytes"] for p in pts}):
        sel = [p for p in pts if p["frame_bytes"] == size]
        t = [p["tablets"] for p in sel]
        axes[0].plot(t, [p["ours_frames_per_s"]["median"] for p in sel],
                     marker="o", label=f"posp2p, {size} B")
        axes[0].plot(t, [p["baseline_frames_per_s"]["median"] for p in sel],
                     marker="x", linestyle="--", label=f"raw libuv, {size} B")
        axes[1].plot(t, [p["ratio"] for p in sel], marker="o",
                     label=f"{size} B")
    goal = doc.get("goals", {}).get("relay_vs_raw", {})
    if goal.get("goal_min"):
        axes[1].axhline(goal["goal_min"], color="red", linestyle="--",
                        label="goal")
    axes[0].set_ylabel("frames per second delivered")
    axes[1].set_ylabel("posp2p / raw baseline")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("tablets")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("relay throughput vs raw loopback baseline\n" + subtitle(doc),
                 fontsize=9)
    save(fig, out_dir, "relay_ratio.png", written)


CHARTS = {"codec.json": chart_codec, "scaling.json": chart_scaling,
          "relay.json": chart_relay}


def main(argv):
    args = argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    src = args[0]
    out = src
    if len(args) == 3 and args[1] == "--out":
        out = args[2]
    elif len(args) != 1:
        print(__doc__)
        return 2
    os.makedirs(out, exist_ok=True)
    written = []
    found = False
    for name, fn in CHARTS.items():
        path = os.path.join(src, name)
        if os.path.exists(path):
            found = True
            fn(load(path), out, written)
    if not found:
        print(f"bench-charts: no {', '.join(CHARTS)} in {src}", file=sys.stderr)
        return 1
    for w in written:
        print(w)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
