"""SPEC.md requirement ids are unique, numbered without gaps, and every id
the code cites exists (scripts/spec_ids.py)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import spec_ids  # noqa: E402


def test_spec_has_requirements_in_every_area():
    reqs, problems = spec_ids.load_spec()
    assert problems == []
    areas = {rid.split("-")[0] for rid in reqs}
    assert areas == set(spec_ids.AREAS)
    assert spec_ids.check_numbering(reqs) == []


def test_every_cited_id_exists():
    reqs, _ = spec_ids.load_spec()
    missing = [f"{p}:{n}: {rid}" for p, n, rid in spec_ids.citations()
               if rid not in reqs]
    assert missing == [], "\n".join(missing)


def test_cli_exit_code():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "spec_ids.py")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "requirements" in r.stdout
