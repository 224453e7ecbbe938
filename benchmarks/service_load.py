"""Load and soak of ``assetgen serve`` on loopback; tests/test_service_load.py runs the same functions.

    python -m benchmarks.service_load                    # card runner: 16 clients x 200 jobs, 200-job soak
    python -m benchmarks.service_load --runner engine    # the real engine at its smallest CPU settings

Load: ``clients`` threads share ``submissions`` uploads; each submits (a queue of ``queue_size`` answers
429 when full: the client counts it and retries after min(Retry-After, ``retry_cap_s``), same
Idempotency-Key), polls the job's status every ``poll_s`` until it is terminal (each status call timed on
the client), then downloads the GLB and checks it against the job's report (magic, bytes, faces). Lost:
an accepted job that did not succeed; duplicates: more jobs in the server's table than were accepted.
The clients are threads of one process (``HARNESS_SWITCH_S``).
Soak: ``jobs`` more jobs through the warm server; the server's and the worker's resident memory (VmRSS)
after the first ``warmup`` jobs and at the end.

Writes ``benchmarks/results/service_cpu.md`` and appends rows to ``benchmarks/results/cpu.csv``. The server
runs as a child process (``benchmarks/service_server.py``, shared with tests/test_service_*.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, append_result, git_sha
from benchmarks.service_server import ServerProcess, load_pictures, rss_bytes, server_job_count
from engine.service.client import TERMINAL, QueueFullError, ServiceClient

# The clients are threads of this process: with CPython's default 5 ms GIL switch interval, 16 of them
# queue behind each other for the GIL after every socket wait and the timed calls measure that convoy
# (p99 ~100 ms for ~2 ms calls measured here), not the server. A short interval while the load runs.
HARNESS_SWITCH_S = 0.0005


# ----------------------------------------------------------------------------------------------- load
@dataclass
class LoadReport:
    clients: int
    submissions: int
    accepted: list[str] = field(default_factory=list)
    rejected_429: int = 0
    status_s: list[float] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    verified: int = 0
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    server_jobs: int = 0

    @property
    def lost(self) -> list[str]:
        return [j for j in self.accepted if self.states.get(j) != "succeeded"]

    @property
    def duplicates(self) -> int:
        unique = len(set(self.accepted))
        return (len(self.accepted) - unique) + max(0, self.server_jobs - unique)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.status_s) * 1e3, q)) if self.status_s else float("nan")

    def line(self) -> str:
        return (f"{self.clients} clients, {self.submissions} submissions: {len(self.accepted)} accepted, "
                f"{self.rejected_429} answered 429, {len(self.lost)} lost, {self.duplicates} duplicates, "
                f"{self.verified} GLBs verified; status calls n={len(self.status_s)} "
                f"p50 {self.percentile_ms(50):.2f} ms p99 {self.percentile_ms(99):.2f} ms; "
                f"wall {self.wall_s:.1f} s")


def run_load(url: str, pictures: list[Path], *, clients: int = 16, submissions: int = 200,
             poll_s: float = 0.1, retry_cap_s: float = 0.2, timeout_s: float = 300.0,
             options: dict | None = None) -> LoadReport:
    """The load (module docstring); every loop is bounded by ``timeout_s``."""
    report = LoadReport(clients, submissions)
    lock = threading.Lock()
    counter = iter(range(submissions))
    deadline = time.monotonic() + timeout_s
    run = uuid.uuid4().hex[:8]
    from engine.io.glb_export import read_glb_summary

    def one_client(index: int, scratch: Path) -> None:
        with ServiceClient(url, timeout=30.0) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                job_id = _submit(client, pictures[i % len(pictures)], f"load-{run}-{i}")
                if job_id is None:
                    return
                view = _follow(client, job_id)
                with lock:
                    report.states[job_id] = view["state"] if view else "timeout"
                if view and view["state"] == "succeeded":
                    path = client.download(job_id, scratch / f"{job_id}.glb")
                    data = path.read_bytes()
                    summary = read_glb_summary(path)
                    path.unlink()
                    ok = (data[:4] == b"glTF" and len(data) == view["result"]["bytes"]
                          and summary["faces"] == view["result"]["faces"])
                    with lock:
                        report.verified += ok
                        if not ok:
                            report.errors.append(f"{job_id}: GLB does not match its report")

    def _submit(client: ServiceClient, picture: Path, key: str) -> str | None:
        while time.monotonic() < deadline:
            try:
                view = client.submit(picture, idempotency_key=key, **(options or {}))
            except QueueFullError as full:
                with lock:
                    report.rejected_429 += 1
                time.sleep(min(full.retry_after, retry_cap_s))
                continue
            with lock:
                report.accepted.append(view["id"])
            return view["id"]
        return None

    def _follow(client: ServiceClient, job_id: str) -> dict | None:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            view = client.status(job_id)
            dt = time.perf_counter() - t0
            with lock:
                report.status_s.append(dt)
            if view["state"] in TERMINAL:
                return view
            time.sleep(poll_s)
        return None

    with ServiceClient(url) as client:
        jobs_before = server_job_count(client)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(HARNESS_SWITCH_S)
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="assetgen-load-") as scratch:
            threads = [threading.Thread(target=_guard, args=(one_client, i, Path(scratch), report, lock))
                       for i in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=max(1.0, deadline - time.monotonic() + 30.0))
    finally:
        sys.setswitchinterval(switch)
    report.wall_s = time.perf_counter() - t0
    with ServiceClient(url) as client:
        report.server_jobs = server_job_count(client) - jobs_before
    return report


def _guard(fn, index: int, scratch: Path, report: LoadReport, lock: threading.Lock) -> None:
    try:
        fn(index, scratch)
    except Exception as err:  # noqa: BLE001 - a client's failure is a finding of the load, reported
        with lock:
            report.errors.append(f"client {index}: {type(err).__name__}: {err}")


# ----------------------------------------------------------------------------------------------- soak
@dataclass
class SoakReport:
    jobs: int
    load: LoadReport
    server_rss: tuple[int, int]  # bytes after the warm-up jobs, at the end
    worker_rss: tuple[int, int]

    @staticmethod
    def growth(pair: tuple[int, int]) -> float:
        return 100.0 * (pair[1] - pair[0]) / pair[0]

    def line(self) -> str:
        s, w = self.server_rss, self.worker_rss
        return (f"soak {self.jobs} jobs: server RSS {s[0] / 2**20:.1f} -> {s[1] / 2**20:.1f} MiB "
                f"({self.growth(s):+.2f} %), worker RSS {w[0] / 2**20:.1f} -> {w[1] / 2**20:.1f} MiB "
                f"({self.growth(w):+.2f} %); {len(self.load.lost)} lost")


def run_soak(server: ServerProcess, pictures: list[Path], *, jobs: int = 200, warmup: int = 20,
             clients: int = 4, timeout_s: float = 300.0, options: dict | None = None) -> SoakReport:
    """``warmup`` jobs, then RSS, then ``jobs`` jobs, then RSS again (server and worker processes)."""
    run_load(server.url, pictures, clients=clients, submissions=warmup, timeout_s=timeout_s, options=options)
    worker = server.worker_pid()
    before = rss_bytes(server.proc.pid), rss_bytes(worker)
    load = run_load(server.url, pictures, clients=clients, submissions=jobs, timeout_s=timeout_s,
                    options=options)
    if server.worker_pid() != worker:
        raise RuntimeError("the worker restarted during the soak")
    after = rss_bytes(server.proc.pid), rss_bytes(worker)
    return SoakReport(jobs, load, (before[0], after[0]), (before[1], after[1]))


# ---------------------------------------------------------------------------------------------- report
def markdown(loads: list[LoadReport], soak: SoakReport | None, runner: str, queue_size: int,
             load_average: float) -> str:
    lines = [
        "# Service load on the CPU (`assetgen serve`, loopback)",
        "",
        f"Machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cores); runner `{runner}`; "
        f"queue size {queue_size}; git {git_sha()}. Produced by `python -m benchmarks.service_load`.",
        "Status latency is measured on the client (16 client threads in one process beside the server and "
        f"its worker on the same cores). 1-minute load average before the run: {load_average:.2f} (other "
        "processes on the machine share the cores and widen the tail).",
        "",
        "| test | clients | jobs | accepted | 429 answers | lost | duplicates | status calls | status p50 ms "
        "| status p99 ms | RSS growth server % | RSS growth worker % | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(f"| load {k + 1}/{len(loads)} | {load.clients} | {load.submissions} | {len(load.accepted)} | "
          f"{load.rejected_429} | {len(load.lost)} | {load.duplicates} | {len(load.status_s)} | "
          f"{load.percentile_ms(50):.2f} | {load.percentile_ms(99):.2f} | | | {load.wall_s:.1f} |"
          for k, load in enumerate(loads)),
    ]
    if soak is not None:
        s = soak.load
        lines.append(f"| soak | {s.clients} | {soak.jobs} | {len(s.accepted)} | {s.rejected_429} | "
                     f"{len(s.lost)} | {s.duplicates} | {len(s.status_s)} | {s.percentile_ms(50):.2f} | "
                     f"{s.percentile_ms(99):.2f} | {soak.growth(soak.server_rss):+.2f} | "
                     f"{soak.growth(soak.worker_rss):+.2f} | {s.wall_s:.1f} |")
    p99 = sorted(load.percentile_ms(99) for load in loads)[len(loads) // 2]
    lines += ["", f"Median over the {len(loads)} load runs of the status p99: {p99:.2f} ms.",
              "Targets: status p99 <= 20 ms under the load, 0 lost, 0 duplicates, RSS growth <= 5 % over "
              "the soak.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runner", default="card", choices=["card", "engine"])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--submissions", type=int, default=200)
    p.add_argument("--queue-size", type=int, default=8)
    p.add_argument("--soak", type=int, default=200, help="soak jobs (0: none)")
    p.add_argument("--repeats", type=int, default=3, help="load runs on the same server")
    p.add_argument("--out", default=str(RESULTS / "service_cpu.md"))
    args = p.parse_args(argv)
    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="assetgen-service-bench-") as tmp:
        tmp = Path(tmp)
        pictures = load_pictures(tmp / "pictures")
        options = {"texture_size": 64, "faces": 200}
        with ServerProcess(tmp / "data", tmp / "server.log", runner=args.runner,
                           queue_size=args.queue_size) as server:
            server.wait_ready(timeout=600)
            loads = []
            for _ in range(args.repeats):
                loads.append(run_load(server.url, pictures, clients=args.clients,
                                      submissions=args.submissions, options=options))
                print(loads[-1].line())
            soak = run_soak(server, pictures, jobs=args.soak, options=options) if args.soak else None
            if soak:
                print(soak.line())
    text = markdown(loads, soak, args.runner, args.queue_size, before)
    pooled = LoadReport(args.clients, args.submissions * args.repeats,
                        status_s=[s for load in loads for s in load.status_s])
    Path(args.out).write_text(text)
    csv_path = RESULTS / "cpu.csv"
    config = f"runner={args.runner} clients={args.clients} queue={args.queue_size}"
    append_result(csv_path, "service_load", args.runner, "status latency", "ms", args.submissions,
                  pooled.percentile_ms(50), pooled.percentile_ms(20), pooled.percentile_ms(80), config, "cpu")
    append_result(csv_path, "service_load", args.runner, "status latency p99", "ms", args.submissions,
                  pooled.percentile_ms(99), None, None, config + f" repeats={args.repeats}", "cpu")
    if soak:
        append_result(csv_path, "service_soak", args.runner, "server rss growth", "%", args.soak,
                      soak.growth(soak.server_rss), None, None, config, "cpu")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
