"""Report writers: JSON, JUnit XML, Markdown and HTML, plus the
requirement verdicts and spec coverage they share."""
from __future__ import annotations

import datetime
import html
import json
import os
import re
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
UNTESTABLE = os.path.join(HERE, "..", "UNTESTABLE.md")
VERDICT_ORDER = ["fail", "warning", "pass", "inconclusive", "not applicable", "untestable",
                 "not run", "not covered"]


def load_untestable(path: str = UNTESTABLE):
    """{id: reason} from the table of UNTESTABLE.md (first cell: one or
    more ids, second cell: the reason)."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 2 or not line.lstrip().startswith("|"):
                continue
            for rid in re.findall(r"\b([A-Z]+-[0-9]+)\b", cells[0]):
                out[rid] = cells[1]
    return out


def requirement_verdicts(spec, results, strict):
    untestable = load_untestable()
    reqs = {}
    for rid, info in spec.items():
        reqs[rid] = {"id": rid, "level": info["level"], "text": info["text"],
                     "line": info["line"], "tests": [], "verdict": None,
                     "untestable": untestable.get(rid), "failures": []}
    for r in results:
        for rid in r["reqs"]:
            if rid in reqs:
                reqs[rid]["tests"].append(r["nodeid"])
    for rid, q in reqs.items():
        outs = []
        for r in results:
            if rid not in r["reqs"]:
                continue
            o = r["outcome"]
            if o in ("fail", "warning", "error") and r["failed_reqs"] and rid not in r["failed_reqs"]:
                # The test failed on another requirement: this one passed if
                # its own checks ran and held before that.
                o = "pass" if rid in r.get("passed_reqs", []) else "inconclusive"
            if o == "fail" and q["level"] != "MUST" and not strict:
                o = "warning"     # a SHOULD/MAY that failed along with a MUST
            outs.append(o)
            if o in ("fail", "warning", "error"):
                q["failures"].append(r["nodeid"])
        if any(o in ("fail", "error") for o in outs):
            q["verdict"] = "fail"
        elif any(o == "warning" for o in outs):
            q["verdict"] = "fail" if strict else "warning"
        elif any(o == "pass" for o in outs):
            q["verdict"] = "pass"
        elif outs and all(o == "na" for o in outs):
            q["verdict"] = "not applicable"
        elif any(o == "inconclusive" for o in outs):
            q["verdict"] = "inconclusive"   # its tests failed on another requirement first
        elif q["tests"]:
            q["verdict"] = "not run"
        elif q["untestable"]:
            q["verdict"] = "untestable"
        else:
            q["verdict"] = "not covered"
    return reqs


def write_all(state, config, results, strict, code):
    spec = state["spec"]
    rd = state["report_dir"]
    reqs = requirement_verdicts(spec, results, strict)
    summary = {}
    for q in reqs.values():
        summary[q["verdict"]] = summary.get(q["verdict"], 0) + 1
    state["req_summary"] = summary
    tcounts = {}
    for r in results:
        tcounts[r["outcome"]] = tcounts.get(r["outcome"], 0) + 1
    prof = state.get("profile")
    data = {
        "suite": "posp2p conformance",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "duration_s": round(__import__("time").time() - state["started"], 3),
        "device": ("%s:%d (%s)" % (prof.address, prof.tcp_port, prof.role) if prof
                   else "reference posp2p-peer %s" % state.get("binary")),
        "profile": prof.to_dict() if prof else None,
        "strict": strict, "exit_code": code,
        "test_counts": tcounts, "requirement_counts": summary,
        "tests": sorted(results, key=lambda r: r["nodeid"]),
        "requirements": reqs,
    }
    paths = {}
    p = os.path.join(rd, "report.json")
    with open(p, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
    paths["json"] = p
    paths["junit"] = write_junit(os.path.join(rd, "junit.xml"), data)
    paths["markdown"] = write_markdown(os.path.join(rd, "report.md"), data)
    paths["html"] = write_html(os.path.join(rd, "report.html"), data)
    return paths


def write_junit(path, data):
    tests = data["tests"]
    ts = ET.Element("testsuite", name="posp2p-conformance", tests=str(len(tests)),
                    failures=str(sum(1 for t in tests if t["outcome"] == "fail")),
                    errors=str(sum(1 for t in tests if t["outcome"] == "error")),
                    skipped=str(sum(1 for t in tests if t["outcome"] in
                                    ("na", "skipped", "warning"))),
                    time="%.3f" % data["duration_s"])
    for t in tests:
        mod, _, name = t["nodeid"].partition("::")
        tc = ET.SubElement(ts, "testcase", classname=mod.replace("/", ".").replace(".py", ""),
                           name=name, time="%.3f" % t["duration_s"])
        props = ET.SubElement(tc, "properties")
        ET.SubElement(props, "property", name="requirements", value=",".join(t["reqs"]))
        ET.SubElement(props, "property", name="level", value=t["level"])
        if t["pcap"]:
            ET.SubElement(props, "property", name="pcap", value=t["pcap"])
        o = t["outcome"]
        if o == "fail":
            e = ET.SubElement(tc, "failure", message=(t["message"] or "")[:500],
                              type=",".join(t["failed_reqs"]))
            e.text = "expected: %s\nactual: %s\n\n%s\n\ndevice log:\n%s" % (
                t["expected"], t["actual"], t["message"], t["log_excerpt"])
        elif o == "error":
            e = ET.SubElement(tc, "error", message=(t["message"] or "")[:500])
            e.text = t["message"]
        elif o == "na":
            ET.SubElement(tc, "skipped", type="not-applicable", message=t["message"])
        elif o == "warning":
            ET.SubElement(tc, "skipped", type="should-warning",
                          message="SHOULD not met: " + (t["message"] or "")[:500])
        elif o == "skipped":
            ET.SubElement(tc, "skipped", message=t["message"])
    ET.ElementTree(ts).write(path, encoding="utf-8", xml_declaration=True)
    return path


def _area(rid):
    return rid.split("-")[0]


def _areas(reqs):
    seen = []
    for rid in reqs:
        a = _area(rid)
        if a not in seen:
            seen.append(a)
    return seen


def _md_escape(s):
    return (s or "").replace("|", "\\|").replace("\n", " ")


def write_markdown(path, data):
    reqs, tests = data["requirements"], {t["nodeid"]: t for t in data["tests"]}
    L = []
    L.append("# posp2p conformance report\n")
    L.append("- Device: %s" % data["device"])
    if data["profile"]:
        L.append("- Profile: %s (role %s, wires %s)" % (data["profile"]["path"],
                                                        data["profile"]["role"],
                                                        ", ".join(data["profile"]["wires"])))
    L.append("- Date: %s; run time %.1f s; %s" % (data["date"], data["duration_s"],
                                                  "strict (SHOULD failures count)"
                                                  if data["strict"] else
                                                  "SHOULD failures are warnings"))
    L.append("- Exit status: %d (%s)" % (data["exit_code"], {
        0: "all applicable tests passed", 1: "some tests failed",
        2: "harness failure", 3: "nothing ran"}[data["exit_code"]]))
    L.append("- Tests: " + ", ".join("%s %d" % kv for kv in sorted(
        data["test_counts"].items(), key=lambda x: str(x[0]))))
    L.append("- Requirements: " + ", ".join("%s %d" % (v, data["requirement_counts"].get(v, 0))
                                            for v in VERDICT_ORDER
                                            if data["requirement_counts"].get(v)))
    L.append("")
    bad = [q for q in reqs.values() if q["verdict"] in ("fail", "warning")]
    L.append("## Failures\n")
    if not bad:
        L.append("None.\n")
    for q in bad:
        L.append("### %s (%s): %s\n" % (q["id"], q["level"], q["verdict"].upper()))
        L.append("> %s\n" % q["text"])
        for nid in q["failures"]:
            t = tests[nid]
            L.append("- Test `%s`" % nid)
            if t["expected"]:
                L.append("  - Expected: %s" % t["expected"])
                L.append("  - Actual: %s" % _md_escape(t["actual"])[:1500])
            else:
                L.append("  - Failure: %s" % _md_escape(t["message"])[:1500])
            if t["pcap"]:
                L.append("  - Capture: `%s`" % t["pcap"])
            if t["log_excerpt"]:
                L.append("  - Device log excerpt:\n\n```\n%s\n```" % t["log_excerpt"][-3000:])
        L.append("")
    L.append("## Requirements\n")
    for area in _areas(reqs):
        L.append("### %s\n" % area)
        L.append("| ID | Level | Verdict | Tests | Requirement |")
        L.append("|---|---|---|---|---|")
        for q in reqs.values():
            if _area(q["id"]) != area:
                continue
            tl = ", ".join("`%s`" % n.split("::")[-1] for n in q["tests"]) or (
                "untestable: " + q["untestable"] if q["untestable"] else "**none**")
            L.append("| %s | %s | %s | %s | %s |" % (q["id"], q["level"], q["verdict"],
                                                     _md_escape(tl), _md_escape(q["text"])))
        L.append("")
    L.append("## Tests\n")
    L.append("| Test | Requirements | Outcome | Time (s) | Note |")
    L.append("|---|---|---|---|---|")
    for t in data["tests"]:
        note = t["message"].splitlines()[0] if t["message"] else ""
        L.append("| `%s` | %s | %s | %.2f | %s |" % (t["nodeid"], ", ".join(t["reqs"]),
                                                     t["outcome"], t["duration_s"],
                                                     _md_escape(note)[:200]))
    L.append("")
    L.append("## Spec coverage\n")
    cov = [q for q in reqs.values() if q["tests"]]
    unt = [q for q in reqs.values() if not q["tests"] and q["untestable"]]
    none = [q for q in reqs.values() if not q["tests"] and not q["untestable"]]
    L.append("%d requirements in SPEC.md: %d checked by tests, %d listed as untestable "
             "(UNTESTABLE.md), %d checked by no test.\n" % (len(reqs), len(cov), len(unt),
                                                            len(none)))
    L.append("| ID | Level | Checked by |")
    L.append("|---|---|---|")
    for q in reqs.values():
        by = ", ".join("`%s`" % n.split("::")[-1] for n in q["tests"]) if q["tests"] else (
            "untestable: %s" % q["untestable"] if q["untestable"] else "**NO TEST**")
        L.append("| %s | %s | %s |" % (q["id"], q["level"], _md_escape(by)))
    if none:
        L.append("\nChecked by no test: " + ", ".join(q["id"] for q in none))
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")
    return path


_CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;width:100%;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:3px 6px;font-size:90%;vertical-align:top}
.pass{background:#dfd}.fail{background:#fcc}.warning{background:#ffd}
.na,.not.applicable{background:#eee}.untestable{background:#e8e8ff}
.not.covered{background:#f99}pre{background:#f6f6f6;padding:6px;overflow:auto}"""


def write_html(path, data):
    e = html.escape
    reqs, tests = data["requirements"], {t["nodeid"]: t for t in data["tests"]}
    H = ["<!doctype html><html><head><meta charset='utf-8'><title>posp2p conformance"
         "</title><style>%s</style></head><body>" % _CSS]
    H.append("<h1>posp2p conformance report</h1><ul>")
    H.append("<li>Device: %s</li>" % e(data["device"]))
    H.append("<li>Date: %s, run time %.1f s, %s</li>" % (
        e(data["date"]), data["duration_s"], "strict" if data["strict"] else
        "SHOULD failures are warnings"))
    H.append("<li>Exit status: %d</li>" % data["exit_code"])
    H.append("<li>Requirements: %s</li></ul>" % e(", ".join(
        "%s %d" % (v, data["requirement_counts"][v]) for v in VERDICT_ORDER
        if data["requirement_counts"].get(v))))
    H.append("<h2>Failures</h2>")
    bad = [q for q in reqs.values() if q["verdict"] in ("fail", "warning")]
    if not bad:
        H.append("<p>None.</p>")
    for q in bad:
        H.append("<h3 class='%s'>%s (%s): %s</h3><blockquote>%s</blockquote>" % (
            q["verdict"], e(q["id"]), q["level"], q["verdict"].upper(), e(q["text"])))
        for nid in q["failures"]:
            t = tests[nid]
            H.append("<p><b>%s</b></p><table><tr><th>Expected</th><td>%s</td></tr>"
                     "<tr><th>Actual</th><td><pre>%s</pre></td></tr>"
                     "<tr><th>Capture</th><td>%s</td></tr>"
                     "<tr><th>Device log</th><td><pre>%s</pre></td></tr></table>" % (
                         e(nid), e(t["expected"] or "-"),
                         e((t["actual"] or t["message"] or "")[:3000]),
                         e(t["pcap"] or "-"), e(t["log_excerpt"][-3000:])))
    H.append("<h2>Requirements and coverage</h2><table><tr><th>ID</th><th>Level</th>"
             "<th>Verdict</th><th>Checked by</th><th>Requirement</th></tr>")
    for q in reqs.values():
        by = "<br>".join(e(n.split("::")[-1]) for n in q["tests"]) or (
            "untestable: " + e(q["untestable"]) if q["untestable"] else "<b>NO TEST</b>")
        H.append("<tr class='%s'><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"
                 % (q["verdict"], e(q["id"]), q["level"], e(q["verdict"]), by, e(q["text"])))
    H.append("</table><h2>Tests</h2><table><tr><th>Test</th><th>Requirements</th>"
             "<th>Outcome</th><th>s</th><th>Note</th></tr>")
    for t in data["tests"]:
        cls = {"na": "na"}.get(t["outcome"], t["outcome"])
        H.append("<tr class='%s'><td>%s</td><td>%s</td><td>%s</td><td>%.2f</td><td>%s</td></tr>"
                 % (cls, e(t["nodeid"]), e(", ".join(t["reqs"])), e(t["outcome"] or ""),
                    t["duration_s"], e((t["message"] or "").splitlines()[0][:200]
                                       if t["message"] else "")))
    H.append("</table></body></html>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(H))
    return path
