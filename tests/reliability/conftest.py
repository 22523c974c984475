"""Shared helpers of the reliability tests: the hypothesis budget and small databases.

Property tests run `examples(n)` cases each: `n` by default (a meaningful CI run that stays
well under a minute on a loaded 2-core machine), or $PREFSIFT_HYPOTHESIS_EXAMPLES each for the
full run recorded in docs/RELIABILITY.md (e.g. 250 x 5 property tests = 1,250 cases).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings


def examples(default: int) -> int:
    env = os.environ.get("PREFSIFT_HYPOTHESIS_EXAMPLES")
    return int(env) if env else default


def property_settings(default: int):
    """Settings of one property test: no deadline (the machine is shared), no database reuse."""
    return settings(
        max_examples=examples(default),
        deadline=None,
        database=None,
        # Shrinking re-runs DuckDB ingests for minutes; the failing example is printed either way.
        phases=[p for p in Phase if p is not Phase.shrink or os.environ.get("PREFSIFT_HYPOTHESIS_SHRINK")],
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture(scope="module")
def shm_dir():
    """A folder in RAM when there is one: each example opens DuckDB a few times, and a tmpfs
    saves the fsyncs (the behaviour under test does not depend on the file system)."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="prefsift-rel-", dir=base) as d:
        yield Path(d)
