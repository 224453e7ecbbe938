"""Prometheus metrics written by hand (text exposition format 0.0.4): counters, gauges, histograms.

The server owns one ``ServiceMetrics``; ``render()`` writes ``GET /metrics``. Gauges that mirror the job
table (queue depth, jobs by state) are filled from the store at scrape time, so they cannot drift.

    assetgen_queue_depth                          pending jobs
    assetgen_jobs{state}                          jobs by state (the whole table)
    assetgen_jobs_finished_total{state}           outcomes since this server started
    assetgen_job_seconds                          run time of finished jobs (histogram)
    assetgen_job_queue_seconds                    submission to start (histogram)
    assetgen_stage_seconds{stage}                 engine stage latency (histogram)
    assetgen_http_request_seconds{method,route}   request latency (histogram; routes as templates)
    assetgen_http_requests_total{method,route,status}
    assetgen_worker_ready, assetgen_worker_restarts_total, assetgen_worker_warmup_seconds
    assetgen_gpu_memory_bytes{kind}               the worker's CUDA memory (CUDA workers only; no series on
                                                  the CPU): allocated / reserved after the last job (or the
                                                  warm-up), peak of that job, peak_max: the highest peak
                                                  since the server started (warm-up included)
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class Histogram:
    """Cumulative-bucket histogram per label set (``le`` buckets, ``_sum``, ``_count``)."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()):
        self.name, self.help, self.buckets, self.labels = name, help_text, buckets, labels
        self._series: dict[tuple[str, ...], list] = {}  # labels -> [bucket counts..., +Inf], sum
        self._lock = threading.Lock()

    def observe(self, value: float, *label_values: str) -> None:
        with self._lock:
            counts, total = self._series.get(label_values, ([0] * (len(self.buckets) + 1), 0.0))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            self._series[label_values] = (counts, total + value)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            series = {k: (list(c), s) for k, (c, s) in self._series.items()}
        for key, (counts, total) in sorted(series.items()):
            running = 0
            for bound, n in zip((*self.buckets, float("inf")), counts):
                running += n
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                labels = _labels(self.labels, key, f'le="{le}"')
                lines.append(f"{self.name}_bucket{labels} {running}")
            lines.append(f"{self.name}_sum{_labels(self.labels, key)} {total:.6f}")
            lines.append(f"{self.name}_count{_labels(self.labels, key)} {running}")
        return lines


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = (), kind: str = "counter"):
        self.name, self.help, self.labels, self.kind = name, help_text, labels, kind
        self._values: dict[tuple[str, ...], float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, *label_values: str, by: float = 1.0) -> None:
        with self._lock:
            self._values[label_values] += by

    def set(self, value: float, *label_values: str) -> None:
        with self._lock:
            self._values[label_values] = value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            values = dict(self._values)
        lines += [f"{self.name}{_labels(self.labels, k)} {v:g}" for k, v in sorted(values.items())]
        return lines


def Gauge(name: str, help_text: str, labels: tuple[str, ...] = ()) -> Counter:  # noqa: N802 - a kind
    return Counter(name, help_text, labels, kind="gauge")


class ServiceMetrics:
    """Every metric of the service (module docstring)."""

    def __init__(self) -> None:
        self.queue_depth = Gauge("assetgen_queue_depth", "Jobs waiting to run.")
        self.jobs = Gauge("assetgen_jobs", "Jobs in the table by state.", ("state",))
        self.finished = Counter("assetgen_jobs_finished_total", "Jobs finished since start, by outcome.",
                                ("state",))
        self.job_seconds = Histogram("assetgen_job_seconds", "Run time of finished jobs.", JOB_BUCKETS)
        self.queue_seconds = Histogram("assetgen_job_queue_seconds", "Submission to start of a job.",
                                       JOB_BUCKETS)
        self.stage_seconds = Histogram("assetgen_stage_seconds", "Engine stage latency.", STAGE_BUCKETS,
                                       ("stage",))
        self.http_seconds = Histogram("assetgen_http_request_seconds", "HTTP request latency.", HTTP_BUCKETS,
                                      ("method", "route"))
        self.http_requests = Counter("assetgen_http_requests_total", "HTTP requests answered.",
                                     ("method", "route", "status"))
        self.worker_ready = Gauge("assetgen_worker_ready", "1 when the worker's engine is warm.")
        self.worker_restarts = Counter("assetgen_worker_restarts_total", "Worker processes started after "
                                       "the first (crash, kill after a timeout).")
        self.warmup_seconds = Gauge("assetgen_worker_warmup_seconds", "Engine build + warm-up of the last "
                                    "worker start.")
        self.gpu_memory = Gauge("assetgen_gpu_memory_bytes", "The worker's CUDA memory: allocated and "
                                "reserved after the last job, its peak, the highest peak since start.",
                                ("kind",))
        self._all = [self.queue_depth, self.jobs, self.finished, self.job_seconds, self.queue_seconds,
                     self.stage_seconds, self.http_seconds, self.http_requests, self.worker_ready,
                     self.worker_restarts, self.warmup_seconds, self.gpu_memory]
        self.job_ema_s: float | None = None  # recent mean run time (Retry-After estimates)
        self._peak_max = 0  # bytes: the highest CUDA peak any worker reported

    def job_finished(self, state: str, run_s: float | None, summary: dict | None) -> None:
        self.finished.inc(state)
        if run_s is not None:
            self.job_seconds.observe(run_s)
            self.job_ema_s = run_s if self.job_ema_s is None else 0.8 * self.job_ema_s + 0.2 * run_s
        self.gpu_memory_seen((summary or {}).get("gpu_memory"))

    def gpu_memory_seen(self, memory: dict[str, int] | None) -> None:
        """The worker's CUDA memory (``runners.cuda_memory``) after its warm-up or a job; None (a CPU
        worker): nothing is set, so the metric has no series rather than a made-up 0."""
        if not memory:
            return
        for kind, value in memory.items():
            self.gpu_memory.set(value, kind)
        if "peak" in memory:
            self._peak_max = max(self._peak_max, memory["peak"])
            self.gpu_memory.set(self._peak_max, "peak_max")

    def render(self, counts: dict[str, int]) -> str:
        """The exposition text; ``counts``: jobs by state from the store (scrape-time gauges)."""
        for state, n in counts.items():
            self.jobs.set(n, state)
        self.queue_depth.set(counts.get("pending", 0))
        lines: list[str] = []
        for metric in self._all:
            lines += metric.render()
        return "\n".join(lines) + "\n"
