"""Run every benchmark, one after another, then write docs/benchmarks.md from their results.

``make bench`` runs this. Each benchmark measures its own baseline in the same run and
writes ``bench/results/<name>.md``; this script only sequences them (never in parallel:
they would skew each other on a 2-core machine) and assembles the page.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
# (module, extra arguments); the order is the page's order.
BENCHES: list[tuple[str, list[str]]] = [
    ("ingest", []),
    ("fleet", []),
    ("agent_footprint", []),
    ("kpi", []),
    ("tunnel", []),
    ("sessions", []),
    ("desk", []),
    ("lookup", []),
    ("knowledge", []),
    ("snmp", []),
]

INTRO = """# Benchmarks

Every figure here comes from `make bench` (`python -m bench.run_all`) on this project's
machine kind: 2 vCPU, loopback only, real Mosquitto and PostgreSQL started by the
benchmark itself. These machines are noisy, so each benchmark measures its own baseline
in the same run (a bare paho subscriber, a bare Python process, a plain SQL scan, an
OpenSSH tunnel, net-snmp's command line tools) and reports **ratios** against it; the absolute numbers are there to read
the ratios by. Each section says what was measured, how, and the load on the machine.
Sections are written by the benchmarks (`bench/results/<name>.md`); rerun one with
`python -m bench.<name>` and then `python -m bench.run_all --report-only`.

"""


def write_page() -> None:
    """Assemble docs/benchmarks.md from the results files, in the order above."""
    sections = []
    for name, _ in BENCHES:
        path = RESULTS / f"{name}.md"
        if path.exists():
            sections.append(path.read_text().strip() + "\n")
    PAGE.write_text(INTRO + "\n".join(sections))
    print(f"wrote {PAGE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--report-only", action="store_true", help="only assemble the page")
    parser.add_argument("only", nargs="*", help="run only these benchmarks")
    args = parser.parse_args()
    if not args.report_only:
        for name, extra in BENCHES:
            if args.only and name not in args.only:
                continue
            if not (ROOT / "bench" / f"{name}.py").exists():
                continue
            print(f"== bench.{name} (load average {os.getloadavg()[0]:.1f})", flush=True)
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", f"bench.{name}", *extra], cwd=ROOT, check=True)
            print(f"== bench.{name} took {time.monotonic() - started:.0f} s", flush=True)
    write_page()


if __name__ == "__main__":
    main()
