"""The machine a benchmark ran on, for its results file."""

from __future__ import annotations

import platform
import subprocess


def cpu_name() -> str:
    """The CPU model as `lscpu` names it (else Python's guess)."""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
