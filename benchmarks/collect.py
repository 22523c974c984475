"""Merge the per-benchmark result sections (benchmarks/results/*.md) into benchmarks/RESULTS.md.

    python benchmarks/collect.py

Each benchmark script writes its own section with the machine, the command and the date; this
only concatenates them in a fixed order, so RESULTS.md never holds a number no script printed.
"""

from __future__ import annotations

import argparse

import _common as C

ORDER = [
    "ingest",
    "scoring",
    "influence",
    "influence_packed",
    "influence_gpu",
    "training",
    "selection",
    "dashboard",
    "crash",
    "demo",
    "demo_alpaca",
]

HEADER = """# Benchmark results

Every section below was written by the script it names (`python benchmarks/<name>.py …`), on the
machine it names. The project machine has 2 CPU cores and no GPU; several sections were measured
while other jobs shared those cores, which each section states (load average) where it matters.
Regenerate a section by rerunning its command, then `python benchmarks/collect.py`.
"""


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    here = C.RESULTS.parent
    parts = sorted(
        C.RESULTS.glob("*.md"),
        key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem),
    )
    body = [HEADER]
    for p in parts:
        body.append(p.read_text().strip() + "\n")
    (here / "RESULTS.md").write_text("\n".join(body))
    print(f"wrote {here / 'RESULTS.md'} from {len(parts)} sections: {', '.join(p.stem for p in parts)}")


if __name__ == "__main__":
    main()
