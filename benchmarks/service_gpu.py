"""Issue 13's GPU run: latency and throughput through ``assetgen serve``'s HTTP API on one GPU, next to
the engine's own figures for the same jobs.

    python -m benchmarks.service_gpu --preset flash --pictures 10 --concurrent 6 --out-dir D --csv D/h100.csv
    python -m benchmarks.service_gpu --device cpu --pictures 2 --concurrent 2 --out-dir D    # CPU smoke

The server is a child process on loopback (benchmarks/service_server.py) whose worker owns the resident
engine: on CUDA the preset with every network at the paper's size and random weights, as
benchmarks/end_to_end_gpu.py builds it (``--precision`` picks the DiTs' linear layers, e.g. the FP8
recipes); with ``--device cpu`` the service tests' tiny CPU pipeline (a smoke run of this script, no
measurement). Parts, in order:

  ready       process start -> /readyz 200 (engine built and warmed), and the worker's own build/warm-up
  warm-up     one job through the API, not counted
  latency     ``--pictures`` jobs one at a time: submit -> result event -> GLB downloaded (the client's
              latency); the job's engine critical path (its stage timer: ``timings.engine_s``); the API
              overhead = client - engine, split into queue + dispatch (``queued_s``), the worker around the
              engine (``run_s`` - engine) and HTTP (upload, event, download: the rest)
  throughput  ``--concurrent`` jobs submitted at once (one client thread each, following its event
              stream): first submit -> last download gives assets/hour, against the engine-only rate of
              the latency part (3600 / mean engine critical path). The worker runs one job at a time: the
              service does not pipeline requests as ``Engine.generate_many`` does.
  status      while the throughput jobs run, one more client times a status call per job every 50 ms
  GPU memory  /metrics ``assetgen_gpu_memory_bytes`` (peak_max: the highest job or warm-up peak)

Pictures: the shared pictures ($ASSETGEN_SHARED/images, default ../shared/images) and their mirror
images, as end_to_end_gpu. Output, flat in --out-dir: ``service_gpu_<preset>[_<precision>]_<tag>.md``
(rewritten after every part and every latency job, so a run cut off keeps its tables; its first line
names the device, torch and the commit: a ``COMMIT`` file in the working folder if present, else git),
the server's log, rows appended to --csv. ``--budget-s`` bounds the whole run: the latency part stops
early and the throughput batch shrinks to fit what is left.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from benchmarks.service_gpu_report import (
    JobTiming,
    Run,
    Throughput,
    gpu_memory,
    header,
    markdown,
    run_label,
    stats,
    write_rows,
)
from benchmarks.service_load import HARNESS_SWITCH_S
from benchmarks.service_server import ServerProcess
from engine.service.client import ServiceClient, ServiceError

STATUS_POLL_S = 0.05


def log(t0: float, msg: str) -> None:
    print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)


def run_job(client: ServiceClient, picture: Path, scratch: Path, timeout_s: float) -> JobTiming:
    """Submit ``picture``, follow its event stream to the end, download the GLB."""
    t0 = time.perf_counter()
    job = client.submit(picture, idempotency_key=uuid.uuid4().hex)
    t1 = time.perf_counter()
    view = client.wait(job["id"], timeout=timeout_s)
    if view["state"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ({picture.name}) ended {view['state']}: {view['error']}")
    t2 = time.perf_counter()
    path = client.download(job["id"], scratch / f"{job['id']}.glb")
    t3 = time.perf_counter()
    if path.read_bytes()[:4] != b"glTF" or path.stat().st_size != view["result"]["bytes"]:
        raise RuntimeError(f"job {job['id']}: the downloaded GLB does not match its report")
    path.unlink()
    timings = view["timings"]
    return JobTiming(picture.name, t3 - t0, timings["engine_s"], timings["queued_s"], timings["run_s"],
                     t1 - t0, t3 - t2, (view["result"].get("gpu_memory") or {}).get("peak"))


def run_throughput(url: str, pictures: list[Path], scratch: Path, timeout_s: float) -> Throughput:
    """Every picture submitted at once (a thread each, started together), a status poller beside them."""
    report, lock = Throughput(), threading.Lock()
    ids: list[str] = []
    done = threading.Event()
    start = threading.Barrier(len(pictures))
    ends: list[float] = []

    def one(picture: Path) -> None:
        with ServiceClient(url, timeout=60.0) as client:
            start.wait()
            try:
                job = client.submit(picture, idempotency_key=uuid.uuid4().hex)
                with lock:
                    ids.append(job["id"])
                view = client.wait(job["id"], timeout=timeout_s)
                t_event = time.perf_counter()
                path = client.download(job["id"], scratch / f"{job['id']}.glb")
                path.unlink()
            except Exception as err:  # noqa: BLE001 - a failed job is a finding of the run, reported
                with lock:
                    report.errors.append(f"{picture.name}: {type(err).__name__}: {err}")
                return
            t = view["timings"]
            with lock:
                ends.append(time.perf_counter())
                if view["state"] != "succeeded":
                    report.errors.append(f"{picture.name}: {view['state']}: {view['error']}")
                    return
                report.jobs.append(JobTiming(picture.name, ends[-1] - t0, t["engine_s"], t["queued_s"],
                                             t["run_s"], float("nan"), ends[-1] - t_event,
                                             (view["result"].get("gpu_memory") or {}).get("peak")))

    def poll() -> None:
        with ServiceClient(url, timeout=30.0) as client:
            while not done.wait(STATUS_POLL_S):
                with lock:
                    known = list(ids)
                for job_id in known:
                    s0 = time.perf_counter()
                    try:
                        client.status(job_id)
                    except (OSError, ServiceError) as err:
                        with lock:
                            report.errors.append(f"status call: {type(err).__name__}: {err}")
                        return
                    report.status_s.append(time.perf_counter() - s0)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(HARNESS_SWITCH_S)  # many client threads in one process: see service_load
    threads = [threading.Thread(target=one, args=(p,)) for p in pictures]
    poller = threading.Thread(target=poll)
    t0 = time.perf_counter()
    try:
        poller.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=timeout_s + 60.0)
    finally:
        done.set()
        poller.join(timeout=30.0)
        sys.setswitchinterval(switch)
    report.wall_s = (max(ends) - t0) if ends else float("nan")
    return report


# ------------------------------------------------------------------------------------------------- run
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="flash", choices=["flash", "default"])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cuda: paper-size random networks; cpu: the tests' tiny pipeline (smoke run)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp8", "int8"],
                   help="the DiTs' linear layers (engine --precision; cuda only)")
    p.add_argument("--pictures", type=int, default=10, help="jobs of the latency part, one at a time")
    p.add_argument("--concurrent", type=int, default=6, help="jobs submitted at once (throughput part)")
    p.add_argument("--budget-s", type=float, default=380.0, help="the whole run, engine start included")
    p.add_argument("--ready-timeout", type=float, default=300.0, help="engine build + warm-up limit")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--csv", default=None, help="rows appended here (default OUT_DIR/<tag>.csv)")
    p.add_argument("--tag", default=None, help="file name suffix (default h100 on cuda, cpu on the CPU)")
    args = p.parse_args(argv)
    if args.pictures < 1 or args.concurrent < 1:
        p.error("--pictures and --concurrent must be >= 1")
    args.tag = args.tag or ("h100" if args.device == "cuda" else "cpu")
    return args


def start_server(args: argparse.Namespace, data: Path, log_path: Path) -> ServerProcess:
    service = dict(runner="engine", queue_size=max(16, args.concurrent + 4), job_timeout_s=300.0,
                   worker_start_timeout_s=args.ready_timeout)
    if args.device == "cuda":
        engine = {"preset": args.preset, "networks": "paper", "precision": args.precision}
        return ServerProcess(data, log_path, engine=engine, **service)
    return ServerProcess(data, log_path, pipeline={"preset": args.preset}, **service)


def measure(run: Run, server: ServerProcess, inputs: list[Path], scratch: Path, t0: float, report) -> None:
    """The parts after ready (module docstring), ``report()`` after each step."""
    args = run.args
    job_limit = 300.0
    with ServiceClient(server.url, timeout=60.0) as client:
        run.warmup = run_job(client, inputs[0], scratch, job_limit)
        log(t0, f"warm-up job: client {run.warmup.client_s:.3f} s, engine {run.warmup.engine_s:.3f} s")
        report()
        for i, picture in enumerate(inputs[:args.pictures]):
            estimate = max([run.warmup.client_s] + [j.client_s for j in run.latency])
            left = args.budget_s - (time.perf_counter() - t0)
            if i >= 3 and left < estimate * (args.concurrent + 1) + 20.0:
                run.notes.append(f"latency part stopped after {i} of {args.pictures} pictures (budget)")
                break
            run.latency.append(run_job(client, picture, scratch, job_limit))
            j = run.latency[-1]
            log(t0, f"latency {i + 1}/{args.pictures} {j.picture}: client {j.client_s:.3f} s, engine "
                    f"{j.engine_s:.3f} s, overhead {1e3 * j.overhead_s:.1f} ms")
            report()
        estimate = stats([j.client_s for j in run.latency])["p50"]
        left = args.budget_s - (time.perf_counter() - t0)
        m = min(args.concurrent, max(2, int((left - 20.0) / estimate)))
        if m < args.concurrent:
            run.notes.append(f"throughput batch cut to {m} of {args.concurrent} jobs (budget)")
            args.concurrent = m
        batch = [inputs[k % len(inputs)] for k in range(m)]
        log(t0, f"throughput: {m} jobs at once")
        run.throughput = run_throughput(server.url, batch, scratch, job_limit + estimate * m)
        t = run.throughput
        log(t0, f"throughput: {len(t.jobs)}/{m} in {t.wall_s:.2f} s = {t.assets_per_hour:.0f} assets/h; "
                f"status p99 {stats(t.status_s, 1e3)['p99']:.2f} ms (n={len(t.status_s)})")
        run.memory = gpu_memory(client.metrics())
        report()


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    args = parse_args(argv)
    from benchmarks.end_to_end_gpu import pictures

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.preset if args.precision == "auto" else f"{args.preset}_{args.precision}"
    md = out / f"service_gpu_{tag}_{args.tag}.md"
    csv = Path(args.csv) if args.csv else out / f"{args.tag}.csv"
    with tempfile.TemporaryDirectory(prefix="assetgen-service-gpu-") as tmp_name:
        tmp = Path(tmp_name)
        inputs = pictures(tmp, max(args.pictures, args.concurrent))
        run = Run(args, header(args.device))

        def report() -> None:
            md.write_text(markdown(run))

        log(t0, f"starting the server ({run_label(args)})")
        server = start_server(args, tmp / "data", out / f"service_gpu_{tag}_{args.tag}_server.log")
        with server:
            try:
                server.wait_ready(min(args.ready_timeout, args.budget_s - (time.perf_counter() - t0) - 30.0))
            except (RuntimeError, TimeoutError) as err:
                run.notes.append(f"the server did not become ready: {str(err).splitlines()[0]}")
                report()
                raise
            run.ready_s = time.perf_counter() - t0
            with ServiceClient(server.url) as client:
                run.worker = client.get("/readyz")["worker"]
            run.header = header(run.worker.get("gpu") or args.device)
            log(t0, f"ready in {run.ready_s:.1f} s: {run.worker}")
            report()
            try:
                measure(run, server, inputs, tmp, t0, report)
            finally:
                report()
        write_rows(run, csv, run.worker.get("gpu") or args.device)
    print(markdown(run), flush=True)
    log(t0, f"wrote {md} and rows in {csv}")
    failed = run.throughput is None or bool(run.throughput.errors) or not run.latency
    if args.device == "cuda" and "peak_max" not in run.memory:
        print("error: a CUDA worker reported no GPU memory in /metrics", flush=True)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
