#!/usr/bin/env python3
"""List the requirements of proto/SPEC.md and check every citation of one.

    /usr/bin/python3 scripts/spec_ids.py             # check, summary
    /usr/bin/python3 scripts/spec_ids.py --json      # requirements as JSON

A requirement is a Markdown line `**AREA-N** (MUST|SHOULD|MAY) text`. The
check fails (exit 1) when an id repeats, when numbering within an area has a
gap, or when C or Python code under proto/, sim/, conformance/ or fuzz/
cites, in a string literal, an id that SPEC.md does not define: error reports
quote these ids to vendors, so a stale one is a bug.
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQ_RE = re.compile(r"\*\*([A-Z]+-[0-9]+)\*\* \((MUST|SHOULD|MAY)\) (.*)")
AREAS = ("TOPO", "CONN", "FRAME", "HELLO", "MSG", "MONEY", "TIME", "ACK", "HB",
         "ROUTE", "DISC", "ERR", "LEGACY", "EXT")
CITE_RE = re.compile(r'"((?:%s)-[0-9]+)"' % "|".join(AREAS))
SCAN_DIRS = ("proto", "sim", "conformance", "fuzz")
SCAN_EXT = (".c", ".h", ".py")


def load_spec(path=None):
    """Return {id: {"level", "text", "line"}} in document order."""
    path = path or os.path.join(ROOT, "proto", "SPEC.md")
    reqs = {}
    problems = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            m = REQ_RE.search(line)
            if not m:
                continue
            rid, level, text = m.groups()
            if rid in reqs:
                problems.append(f"SPEC.md:{lineno}: {rid} defined again "
                                f"(first at line {reqs[rid]['line']})")
                continue
            reqs[rid] = {"level": level, "text": text.strip(), "line": lineno}
    return reqs, problems


def check_numbering(reqs):
    problems = []
    by_area = {}
    for rid in reqs:
        area, num = rid.rsplit("-", 1)
        by_area.setdefault(area, []).append(int(num))
    for area, nums in by_area.items():
        if area not in AREAS:
            problems.append(f"unknown area {area}")
        want = list(range(1, len(nums) + 1))
        if sorted(nums) != want:
            problems.append(f"{area}: ids are not 1..{len(nums)}: {sorted(nums)}")
    return problems


def citations():
    """Yield (path, line, id) for every cited id in code."""
    for d in SCAN_DIRS:
        base = os.path.join(ROOT, d)
        for dirpath, _, files in os.walk(base):
            if "/corpus" in dirpath or "/vectors" in dirpath:
                continue
            for name in files:
                if not name.endswith(SCAN_EXT):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for lineno, line in enumerate(f, 1):
                        for m in CITE_RE.finditer(line):
                            yield os.path.relpath(path, ROOT), lineno, m.group(1)


def main(argv):
    reqs, problems = load_spec()
    if "--json" in argv:
        json.dump(reqs, sys.stdout, indent=1)
        print()
        return 0
    problems += check_numbering(reqs)
    cited = set()
    for path, lineno, rid in citations():
        cited.add(rid)
        if rid not in reqs:
            problems.append(f"{path}:{lineno}: cites {rid}, which SPEC.md "
                            "does not define")
    levels = {}
    for r in reqs.values():
        levels[r["level"]] = levels.get(r["level"], 0) + 1
    print(f"SPEC.md: {len(reqs)} requirements "
          f"({', '.join(f'{k} {v}' for k, v in sorted(levels.items()))}); "
          f"{len(cited)} cited by code")
    for p in problems:
        print("error:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
