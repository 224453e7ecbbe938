"""Shared benchmark helpers: timing statistics and the results-row appender.

Every benchmark appends one row per (name, variant, metric, size) to ``benchmarks/results/<device>.csv``
(``cpu.csv`` on the CPU reference path). Columns, in order:
  name, variant, metric, unit, size, p50, p20, p80, config, gpu, git_sha, timestamp
``gpu`` is the device the row was measured on (``cpu`` or the GPU's name), ``config`` a short free-form
string of the settings that matter (resolution, targets, ...), ``git_sha`` the commit of the measured code
(suffixed ``-dirty`` when tracked files differ from it) and ``timestamp`` UTC ISO-8601.
"""

from __future__ import annotations

import csv
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

COLUMNS = ("name", "variant", "metric", "unit", "size", "p50", "p20", "p80", "config", "gpu", "git_sha",
           "timestamp")
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def git_sha() -> str:
    """Short sha of HEAD, with ``-dirty`` when tracked files are modified; ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=REPO).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def percentiles(samples: list[float] | np.ndarray) -> tuple[float, float, float]:
    """(p50, p20, p80) of the samples."""
    a = np.asarray(samples, dtype=np.float64)
    return float(np.median(a)), float(np.percentile(a, 20)), float(np.percentile(a, 80))


def time_repeats(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> tuple[list[float], object]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls (CPU timing;
    GPU benchmarks should use CUDA events instead). Returns (seconds per call, last result)."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def cuda_times(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn``, each between two CUDA events on the current stream."""
    import torch

    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1000.0)
    return times


def append_result(csv_path: str | Path, name: str, variant: str, metric: str, unit: str, size: str | int,
                  p50: float, p20: float | None, p80: float | None, config: str, device: str) -> None:
    """Append one row to ``csv_path`` (header written when the file is new), with git sha and timestamp.

    p20/p80 may be None for a single deterministic value (written as p50). ``device`` fills ``gpu``.
    """
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    row = (name, variant, metric, unit, str(size), f"{p50:.6g}", f"{(p50 if p20 is None else p20):.6g}",
           f"{(p50 if p80 is None else p80):.6g}", config, device, git_sha(),
           datetime.now(timezone.utc).isoformat(timespec="seconds"))
    with path.open("a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(COLUMNS)
        writer.writerow(row)
