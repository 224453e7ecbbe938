"""The tables of benchmarks/service_gpu.py: what one run measured (``Run``), its markdown report and its
CSV rows (benchmarks/common.py's columns)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from benchmarks.common import append_result, git_sha

STATUS_TARGET_MS = 20.0  # issue 13: status calls' p99 under load


@dataclass
class JobTiming:
    """One job seen by the client and by the server (seconds)."""

    picture: str
    client_s: float  # submit -> GLB downloaded
    engine_s: float  # the engine's critical path (the worker's stage timer)
    queued_s: float  # created -> started (server clock)
    run_s: float  # started -> finished (server clock): engine + the worker around it
    submit_s: float  # the POST alone
    download_s: float  # the GET result.glb alone
    peak_bytes: int | None  # the job's CUDA peak (None on the CPU)

    @property
    def overhead_s(self) -> float:
        return self.client_s - self.engine_s

    @property
    def worker_s(self) -> float:
        return self.run_s - self.engine_s

    @property
    def http_s(self) -> float:
        return self.client_s - self.queued_s - self.run_s


@dataclass
class Throughput:
    jobs: list[JobTiming] = field(default_factory=list)
    wall_s: float = float("nan")
    status_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def assets_per_hour(self) -> float:
        return 3600.0 * len(self.jobs) / self.wall_s if self.jobs else float("nan")


def stats(values: list[float], scale: float = 1.0) -> dict[str, float]:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64) * scale
    if not len(a):
        return {q: float("nan") for q in ("p20", "p50", "p80", "p90", "p99", "mean")}
    return {"p20": float(np.percentile(a, 20)), "p50": float(np.median(a)),
            "p80": float(np.percentile(a, 80)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def gpu_memory(metrics_text: str) -> dict[str, float]:
    """``assetgen_gpu_memory_bytes`` by kind from /metrics (empty: a CPU worker reports none)."""
    out = {}
    for line in metrics_text.splitlines():
        if line.startswith('assetgen_gpu_memory_bytes{kind="'):
            kind = line.split('"')[1]
            out[kind] = float(line.rsplit(" ", 1)[1])
    return out


@dataclass
class Run:
    """Everything measured so far (the report is written from it after every step)."""

    args: argparse.Namespace
    header: str
    ready_s: float = float("nan")
    worker: dict = field(default_factory=dict)
    warmup: JobTiming | None = None
    latency: list[JobTiming] = field(default_factory=list)
    throughput: Throughput | None = None
    memory: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def engine_rate(self) -> float:
        """assets/hour of the engine alone, one job at a time (the latency part's mean critical path)."""
        return 3600.0 / stats([j.engine_s for j in self.latency])["mean"]


def markdown(run: Run) -> str:
    a, w = run.args, run.worker
    lines = [run.header, "",
             f"# Service on {w.get('gpu') or a.device}: `assetgen serve` over loopback, preset {a.preset}"
             f" ({run_label(a)})", "",
             "Produced by `python -m benchmarks.service_gpu` (module docstring: what each part measures). "
             "Client and server share the machine; the worker owns the engine, one job at a time.", "",
             f"Process start -> ready (engine built and warmed): **{run.ready_s:.1f} s** (worker: build "
             f"{w.get('build_s', float('nan')):.1f} s, warm-up request {w.get('warmup_s', float('nan')):.1f} "
             "s)."]
    if run.warmup:
        lines.append(f"Warm-up job through the API (not counted): client {run.warmup.client_s:.3f} s, "
                     f"engine {run.warmup.engine_s:.3f} s.")
    if run.latency:
        lines += ["", f"## Latency, one job at a time ({len(run.latency)} pictures)", "",
                  "| picture | client s | engine s | overhead ms | queue+dispatch ms | worker ms | HTTP ms |"
                  " submit ms | download ms |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {j.picture} | {j.client_s:.3f} | {j.engine_s:.3f} | {1e3 * j.overhead_s:.1f} | "
                  f"{1e3 * j.queued_s:.1f} | {1e3 * j.worker_s:.1f} | {1e3 * j.http_s:.1f} | "
                  f"{1e3 * j.submit_s:.1f} | {1e3 * j.download_s:.1f} |" for j in run.latency]
        rows = (("client latency (submit -> GLB downloaded)", "s", 1.0, [j.client_s for j in run.latency]),
                ("engine critical path (the job's stage timer)", "s", 1.0, [j.engine_s for j in run.latency]),
                ("API overhead (client - engine)", "ms", 1e3, [j.overhead_s for j in run.latency]),
                ("  queue + dispatch", "ms", 1e3, [j.queued_s for j in run.latency]),
                ("  worker around the engine", "ms", 1e3, [j.worker_s for j in run.latency]),
                ("  HTTP (upload, result event, download)", "ms", 1e3, [j.http_s for j in run.latency]))
        lines += ["", "| over the pictures | unit | p50 | p90 | p99 |", "|---|---|---|---|---|"]
        for name, unit, scale, values in rows:
            s = stats(values, scale)
            lines.append(f"| {name} | {unit} | {s['p50']:.3f} | {s['p90']:.3f} | {s['p99']:.3f} |")
        if len(run.latency) < 100:
            lines.append(f"\n(p99 of {len(run.latency)} samples: about their maximum.)")
    if run.throughput:
        t = run.throughput
        batch = [j.client_s for j in t.jobs]
        lines += ["", f"## Throughput: {a.concurrent} jobs submitted at once", "",
                  "| figure | value |", "|---|---|",
                  f"| jobs succeeded | {len(t.jobs)} of {a.concurrent} |",
                  f"| wall, first submit -> last GLB downloaded | {t.wall_s:.2f} s |",
                  f"| **through the API** | **{t.assets_per_hour:.0f} assets/h** |",
                  f"| engine alone, one at a time (3600 / mean engine s of the latency part) | "
                  f"{run.engine_rate:.0f} assets/h |",
                  f"| rate lost through the API | {100 * (1 - t.assets_per_hour / run.engine_rate):.1f} % |",
                  f"| client latency p50 / max in the batch | {stats(batch)['p50']:.2f} / "
                  f"{max(batch, default=float('nan')):.2f} s |",
                  f"| status calls during the batch (n={len(t.status_s)}) p50 / p99 | "
                  f"{stats(t.status_s, 1e3)['p50']:.2f} / {stats(t.status_s, 1e3)['p99']:.2f} ms "
                  f"(target p99 <= {STATUS_TARGET_MS:g} ms) |"]
        lines += [f"\nError: {e}" for e in t.errors]
    lines += ["", "## GPU memory (the worker's, from /metrics)", ""]
    if run.memory:
        lines += ["| kind | GiB |", "|---|---|"]
        lines += [f"| {k} | {v / 2**30:.2f} |" for k, v in sorted(run.memory.items())]
        peaks = [j.peak_bytes / 2**30 for j in run.latency if j.peak_bytes is not None]
        if peaks:
            lines.append(f"\nEach latency job's own peak (stats reset at its start): p50 "
                         f"{np.median(peaks):.2f} GiB, max {max(peaks):.2f} GiB.")
    else:
        lines.append("absent: a CPU worker reports no GPU memory (the metric has no series)")
    lines += [f"\nNote: {n}" for n in run.notes]
    return "\n".join(lines) + "\n"


def run_label(a: argparse.Namespace) -> str:
    if a.device == "cpu":
        return "device cpu, the tests' tiny pipeline: a smoke run, not a measurement"
    return f"device cuda, paper-size random networks, precision {a.precision}"


def write_rows(run: Run, csv: Path, gpu: str) -> None:
    a = run.args
    variant = a.preset if a.precision == "auto" else f"{a.preset}_{a.precision}"
    config = f"device={a.device} networks={'paper' if a.device == 'cuda' else 'tiny'} precision={a.precision}"
    n = len(run.latency)

    def row(metric: str, unit: str, size: int, s: dict | float) -> None:
        if isinstance(s, dict):
            append_result(csv, "service_gpu", variant, metric, unit, size, s["p50"], s["p20"], s["p80"],
                          config, gpu)
        else:
            append_result(csv, "service_gpu", variant, metric, unit, size, s, None, None, config, gpu)

    row("ready", "s", 1, run.ready_s)
    if n:
        row("client_latency", "s", n, stats([j.client_s for j in run.latency]))
        row("engine_critical_path", "s", n, stats([j.engine_s for j in run.latency]))
        row("api_overhead", "ms", n, stats([j.overhead_s for j in run.latency], 1e3))
        row("api_overhead_p99", "ms", n, stats([j.overhead_s for j in run.latency], 1e3)["p99"])
    if run.throughput and run.throughput.jobs:
        t = run.throughput
        row("throughput_api", "assets/hour", a.concurrent, t.assets_per_hour)
        row("throughput_engine_serial", "assets/hour", n, run.engine_rate)
        row("status_p99_under_load", "ms", len(t.status_s), stats(t.status_s, 1e3)["p99"])
    if "peak_max" in run.memory:
        row("gpu_peak_memory", "GiB", 1, run.memory["peak_max"] / 2**30)


def header(device: str) -> str:
    """An HTML comment naming the device, torch and the commit (``COMMIT`` in the working folder, as the
    device copy carries it, else git)."""
    try:
        torch = version("torch")
    except PackageNotFoundError:
        torch = "absent"
    commit_file = Path("COMMIT")
    commit = commit_file.read_text().strip() if commit_file.is_file() else git_sha()
    return f"<!-- device: {device}; torch {torch}; commit {commit} -->"
