"""What the benchmark scripts share: paths, timing, the date / machine / load line of a results
file, and the loaders of the shared data files.

A script in benchmarks/ has this folder on sys.path (Python puts the script's folder there), so
`import _common` works; importing it puts the repository first on sys.path and PYTHONPATH, so
that `prefsift` (in this process and in `python -m prefsift` subprocesses) and `tests` are this
checkout's, and sets the Hugging Face libraries offline unless told otherwise.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # the benchmarks build or carry their models
    os.environ.setdefault(_k, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):  # `python -m prefsift` too
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
RESULTS = ROOT / "benchmarks" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"  # ../shared/data beside the repository
HH_FILE = "hh-rlhf-harmless-base-test.jsonl.gz"
ALPACA_FILE = "alpaca_eval-alpaca-7b-vs-text-davinci-003.gpt4.json.gz"
MARK = "\n\nAssistant:"


def add_data_arg(ap, flag: str = "--data") -> None:
    """The folder holding the shared data files: ../shared/data beside the repository by default."""
    ap.add_argument(
        flag,
        default=str(SHARED_DATA),
        help=f"folder holding the shared data files, e.g. {HH_FILE} (default: ../shared/data beside the repository)",
    )


# ---------------------------------------------------------------- timing
class Stopwatch:
    """Wall and process CPU seconds (all threads) since it started, frozen when its `with` block ends:
    `with Stopwatch() as sw: ...` then `sw.wall`, `sw.cpu`."""

    def __init__(self) -> None:
        self.t0, self.c0, self._end = time.perf_counter(), time.process_time(), None

    def __enter__(self) -> Stopwatch:
        self.__init__()
        return self

    def __exit__(self, *exc) -> None:
        self._end = (time.perf_counter(), time.process_time())

    @property
    def wall(self) -> float:
        return (self._end[0] if self._end else time.perf_counter()) - self.t0

    @property
    def cpu(self) -> float:
        return (self._end[1] if self._end else time.process_time()) - self.c0


def timed(fn, repeats: int = 1) -> tuple[object, list[float], list[float]]:
    """Call fn(i) for i in range(repeats): (the last result, wall seconds of each call, process CPU
    seconds of each call, a figure the other jobs on a shared machine do not inflate)."""
    out, walls, cpus = None, [], []
    for i in range(repeats):
        with Stopwatch() as sw:
            out = fn(i)
        walls.append(sw.wall)
        cpus.append(sw.cpu)
    return out, walls, cpus


# ---------------------------------------------------------------- the machine, for results files
def cpu_name() -> str:
    """The CPU model as `lscpu` names it (else Python's guess)."""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def load() -> str:
    """The load average (1/5/15 min) now, e.g. '1.9/2.3/2.4'."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def about(load_at_start: str | None = None, torch: bool = False, load_at_end: str | None = None) -> str:
    """The date / machine / load line of a results file. Pass `load()` taken at the start to show
    both ends of the run (the end is now unless given); `torch` adds torch's version and threads."""
    m = f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if torch:
        import torch as t

        m += f", torch {t.__version__} ({t.get_num_threads()} threads)"
    end = load_at_end or load()
    ld = f"{load_at_start} at the start, {end} at the end" if load_at_start else f"{end} at the end"
    return (
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Machine: {m}. Load average (1/5/15 min): {ld} "
        "(other jobs may share the cores: a load above the core count inflates wall times)."
    )


# ---------------------------------------------------------------- data: two readings of a file
def hh_pairs(path: Path | str, limit: int | None = None, keep_blank: bool = False) -> list[dict]:
    """HH-RLHF rows as {prompt, chosen, rejected}: the prompt is the dialogue both answers share, up
    to and including the last '\\n\\nAssistant:'. Rows whose answers do not share it, or are equal,
    are left out, and so are blank answers unless `keep_blank` (benchmarks/influence.py keeps them:
    its recorded results were drawn that way). At most `limit` pairs."""
    out = []
    with gzip.open(path, "rt") as f:
        for line in f:
            row = json.loads(line)
            c, r = row["chosen"], row["rejected"]
            cut = c.rfind(MARK) + len(MARK)
            prompt = c[:cut]
            if cut < len(MARK) or not r.startswith(prompt):
                continue
            chosen, rejected = c[cut:], r[cut:]
            if chosen != rejected and (keep_blank or (chosen.strip() and rejected.strip())):
                out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
            if limit is not None and len(out) >= limit:
                break
    return out


def prefsift_pairs(path: Path | str) -> tuple[int, list, int]:
    """(raw row count, [(row index, Pair)], rows that are not a pair) of a data file (HH-RLHF,
    AlpacaEval, ...), read and format-detected as `prefsift ingest` does (AlpacaEval's ties are
    not a pair: no preference). benchmarks/reproduce.py runs the product on these."""
    from prefsift.formats import Bad, ColumnMap, normalise, vote_format
    from prefsift.sources import RawError, read_rows

    rows = list(read_rows(str(path)))
    fmt, cmap = vote_format([r for _, r in rows if isinstance(r, dict)], ColumnMap())
    good, n_bad = [], 0
    for i, r in rows:
        p = Bad("", "unreadable", "") if isinstance(r, RawError) else normalise(r, fmt, cmap, 200_000)
        if isinstance(p, Bad):
            n_bad += 1
        else:
            good.append((i, p))
    return len(rows), good, n_bad
