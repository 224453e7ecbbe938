"""The worker process: owns one runner (the resident ``Engine``), built once and warmed once, and runs
one job at a time for the server, which talks to it over a ``multiprocessing`` pipe.

Started with the ``spawn`` context (``engine.service.supervisor``): nothing here runs at import time, and
``worker_main`` is the only entry. Messages, all tuples:

    server -> worker   ("run", JobTicket) | ("stop_job", job_id, reason) | ("shutdown",)
    worker -> server   ("ready", info) | ("fatal", message) | ("progress", job_id, index, count, stage,
                       seconds_or_None) | ("done", job_id, summary) | ("failed", job_id, message)
                       | ("stopped", job_id, reason)

A stop request (cancel, timeout, shutdown) is honoured at the next stage boundary: the progress callback
raises ``JobStopped``. The result is written into the job's ``work/`` folder and renamed to
``result.glb`` only when the job succeeded, so a stopped or failed job leaves no result behind.
The worker ignores SIGINT and SIGTERM (sent to the whole process group by a terminal or systemd: the server
decides what happens to the running job, and kills the worker if it must) and exits on its own when the
server process is gone (a watchdog thread checks the parent), so a killed server leaves no orphan.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import PipelineConfig
from engine.errors import AssetGenError
from engine.service.config import RunnerKind
from engine.service.logs import fields
from engine.service.ray_config import RayConfig

log = logging.getLogger("assetgen.worker")


@dataclass(frozen=True)
class WorkerSettings:
    """What the worker is built from (picklable: sent to the spawned process)."""

    runner: RunnerKind
    pipeline: PipelineConfig
    log_level: str = "info"
    parent_pid: int = 0
    nice: int = 0
    ray: RayConfig | None = None  # --backend ray: jobs run on the Ray Serve deployments (RayRunner)


@dataclass(frozen=True)
class JobTicket:
    """One job for the worker: the picture, the job's folder, its config and segmenter."""

    job_id: str
    picture: Path
    job_dir: Path
    config: PipelineConfig
    segmenter: str | None = None
    options: dict = field(default_factory=dict)


class JobStopped(Exception):
    """Raised from the progress callback to stop a job at a stage boundary (reason: canceled | timeout |
    shutdown)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def worker_main(conn, settings: WorkerSettings) -> None:
    """Entry of the spawned worker process (``multiprocessing`` target)."""
    from engine.service.logs import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C or systemd's SIGTERM to the whole
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # group: the server decides (drain, requeue, kill)
    configure_logging(settings.log_level, process="worker")
    if settings.nice:
        os.nice(settings.nice)
    if settings.ray is not None and settings.ray.address is None:
        os.setpgrp()  # the local Ray instance's processes join this group: a terminal's Ctrl-C spares them,
        #               and the server (or the watchdog) ends them all with one killpg
    _watch_parent(settings.parent_pid)
    try:
        built = _build(settings)
    except AssetGenError as err:
        conn.send(("fatal", str(err)))
        return
    if built is None:
        conn.send(("fatal", "the engine could not be built (fix: see the worker's log for the traceback)"))
        return
    Worker(conn, *built, settings).serve()


def _build(settings: WorkerSettings):
    """(runner, {"build_s", "warmup_s"}), or None after logging an unexpected start-up error."""
    from engine.service.runners import make_runner

    t0 = time.perf_counter()
    try:
        runner = make_runner(settings.runner, settings.pipeline, settings.ray)
        build_s = time.perf_counter() - t0
        warmup_s = runner.warmup()
        info = runner.info()
    except AssetGenError:
        raise
    except Exception:  # noqa: BLE001 - reported to the server as a fatal start-up error, traceback logged
        log.exception("worker start-up failed")
        return None
    return runner, {"build_s": round(build_s, 3), "warmup_s": round(warmup_s, 3), **info}


def _watch_parent(parent_pid: int) -> None:
    """Exit when the server process is gone (SIGKILL leaves no chance to tell us)."""
    if not parent_pid:
        return

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                log.warning("server process %d is gone; worker exits", parent_pid)
                if os.getpgrp() == os.getpid():  # --backend ray: our local Ray instance goes with us
                    os.killpg(0, signal.SIGKILL)
                os._exit(3)
            time.sleep(0.25)

    threading.Thread(target=watch, name="assetgen-parent-watch", daemon=True).start()


class Worker:
    """The worker's loop: a reader thread takes messages off the pipe (stop requests must arrive while a
    job runs); the main thread runs jobs and sends every message back (one sender: the pipe is not
    thread-safe)."""

    def __init__(self, conn, runner, startup: dict, settings: WorkerSettings) -> None:
        self.conn = conn
        self.runner = runner
        self.startup = startup
        self.settings = settings
        self.jobs: queue.Queue = queue.Queue()
        self.stop_reason: dict[str, str] = {}
        self._lock = threading.Lock()

    def serve(self) -> None:
        info = {"pid": os.getpid(), "runner": self.settings.runner.value,
                "device": self.settings.pipeline.runtime.device.value, **self.startup}
        self.conn.send(("ready", info))
        log.info("worker ready", extra=fields(**info))
        threading.Thread(target=self._read, name="assetgen-worker-read", daemon=True).start()
        try:
            while True:
                ticket = self.jobs.get()
                if ticket is None:
                    break
                self._run(ticket)
        finally:
            self.runner.close()
            log.info("worker stopped")

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                message = ("shutdown",)
            if message[0] == "run":
                self.jobs.put(message[1])
            elif message[0] == "stop_job":
                with self._lock:
                    self.stop_reason[message[1]] = message[2]
            else:
                self.jobs.put(None)
                return

    def _check_stop(self, job_id: str) -> None:
        with self._lock:
            reason = self.stop_reason.get(job_id)
        if reason is not None:
            raise JobStopped(reason)

    def _run(self, ticket: JobTicket) -> None:
        job_id = ticket.job_id
        tag = fields(job_id=job_id)
        work = ticket.job_dir / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)

        def progress(index: int, count: int, stage: str, seconds: float | None) -> None:
            self.conn.send(("progress", job_id, index, count, stage, seconds))
            self._check_stop(job_id)

        log.info("job started", extra=fields(job_id=job_id, options=ticket.options))
        try:
            self._check_stop(job_id)
            summary = self.runner.run(ticket.picture, work / "result.glb", ticket.config, ticket.segmenter,
                                      progress)
            os.replace(work / "result.glb", ticket.job_dir / "result.glb")
            _fsync_dir(ticket.job_dir)
            message = ("done", job_id, summary)
        except JobStopped as stop:
            message = ("stopped", job_id, stop.reason)
        except AssetGenError as err:
            message = ("failed", job_id, str(err))
        except MemoryError:
            message = ("failed", job_id, _OOM)
        except Exception as err:  # noqa: BLE001 - one job's bug must not take the worker down
            if "out of memory" in str(err).lower():
                message = ("failed", job_id, _OOM)
            else:
                log.exception("job raised", extra=tag)
                first = str(err).splitlines()[0] if str(err) else ""
                message = ("failed", job_id, f"internal error {type(err).__name__}: {first} (fix: report "
                                             f"this bug with job id {job_id}; the log has the traceback)")
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with self._lock:
                self.stop_reason.pop(job_id, None)
        log.info(f"job {message[0]}", extra=tag)
        self.conn.send(message)


_OOM = ("out of memory (fix: lower faces, texture_size or normal_map_size, or run the server with "
        "--preset flash)")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
