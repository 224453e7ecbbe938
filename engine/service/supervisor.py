"""The server side of the worker: starts it (spawn), feeds it jobs from the store, reads its messages,
enforces time limits, restarts it when it dies, expires old results, and drains it on shutdown.

One thread (``assetgen-supervisor``) does all of it and is the only one that writes to the worker's pipe;
request handlers hand it commands (``cancel``) through a queue and wake it through a socket pair. It waits
on the pipe, the worker's process sentinel and the wake socket at once, so a submission is dispatched and
a crash noticed without polling delays.

Outcomes of a running job:
  * the worker answers done / failed / stopped(canceled) -> succeeded / failed / canceled;
  * its time limit passes -> a stop request (honoured at the next stage boundary: failed, "timed out");
    still running ``kill_grace_s`` later -> the worker is killed, the job fails, a fresh worker starts;
  * the worker dies (crash, OOM killer, os._exit) -> the job fails with one line naming the exit, a fresh
    worker starts; the server stays up;
  * shutdown (SIGTERM/SIGINT) -> no new job starts; the running one has ``shutdown_grace_s`` to finish,
    then is stopped at a stage boundary (or killed) and requeued: the next server start runs it again.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any
from pathlib import Path

from engine.errors import ConfigError
from engine.service.config import Backend, JobOptions, ServiceConfig, job_config
from engine.service.jobs_store import JobState, JobStore
from engine.service.logs import fields
from engine.service.metrics import ServiceMetrics
from engine.service.progress_board import ProgressBoard
from engine.service.worker import JobTicket, WorkerSettings, worker_main

log = logging.getLogger("assetgen.supervisor")
RESTART_BACKOFF_S = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)  # after consecutive failed starts


@dataclass
class Running:
    job_id: str
    started: float  # time.monotonic()
    timeout_s: float
    stop_reason: str | None = None
    stop_sent: float | None = None


class Supervisor:
    def __init__(self, config: ServiceConfig, store: JobStore, board: ProgressBoard,
                 metrics: ServiceMetrics) -> None:
        self.config, self.store, self.board, self.metrics = config, store, board, metrics
        self.proc = None
        self.conn = None
        self.ready = False
        self.worker_info: dict = {}
        self.fatal: str | None = None  # last start-up error (readyz shows it)
        self.running: Running | None = None
        self.draining = False
        self._drain_deadline = 0.0
        self._commands: queue.Queue = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread = threading.Thread(target=self._loop, name="assetgen-supervisor", daemon=True)
        self._starts = 0
        self._failed_starts = 0
        self._next_start = 0.0
        self._start_deadline = 0.0
        self._next_sweep = 0.0
        self._done = threading.Event()

    # ------------------------------------------------------------------------------- calls from the API
    def start(self) -> None:
        recovered = self.store.recover(self.config.max_attempts)
        self._sweep_folders()
        log.info("jobs recovered", extra=fields(**recovered))
        self._thread.start()

    def wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except BlockingIOError:  # the socket buffer is full of wake-ups already
            pass

    def cancel(self, job_id: str) -> None:
        """Stop ``job_id`` at its next stage boundary if it is the running job."""
        self._commands.put(("cancel", job_id))
        self.wake()

    def begin_drain(self) -> None:
        """Start no new job and no new worker; the running job has ``shutdown_grace_s`` to finish."""
        self._commands.put(("drain", None))
        self.wake()

    def stop(self) -> None:
        """Drain (module docstring) and stop the worker; returns when done or after a bounded wait."""
        if not self._thread.is_alive():
            return
        self.begin_drain()
        limit = self.config.shutdown_grace_s + 2 * self.config.kill_grace_s + 15.0
        self._done.wait(timeout=limit)

    # ------------------------------------------------------------------------------------------- loop
    def _loop(self) -> None:
        try:
            while True:
                self._take_commands()
                if self.draining and self._drained():
                    break
                self._ensure_worker()
                self._dispatch()
                self._check_time()
                self._sweep_expired()
                self._wait(0.25)
        except Exception:  # noqa: BLE001 - logged; the API then reports not ready
            log.exception("supervisor stopped by an error")
        finally:
            self._stop_worker()
            self._done.set()

    def _wait(self, timeout: float) -> None:
        handles = [self._wake_r]
        if self.conn is not None:
            handles += [self.conn, self.proc.sentinel]
        for handle in wait_any(handles, timeout=timeout):
            if handle is self._wake_r:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except BlockingIOError:
                    pass
            elif self.conn is None:
                continue  # the worker died earlier in this round
            elif handle is self.conn and self._receive():
                continue
            else:  # its sentinel, or the pipe's end of file: the worker is gone
                self._receive()  # messages sent before it died come first
                self.proc.join(timeout=5.0)
                self._reap_group()
                self._worker_died()

    def _take_commands(self) -> None:
        while True:
            try:
                name, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if name == "cancel" and self.running and self.running.job_id == arg:
                self._stop_job("canceled")
            elif name == "drain" and not self.draining:
                self.draining = True
                self._drain_deadline = time.monotonic() + self.config.shutdown_grace_s
                log.info("draining", extra=fields(running=self.running.job_id if self.running else None))

    def _drained(self) -> bool:
        if self.running is None:
            return True
        if time.monotonic() > self._drain_deadline and self.running.stop_reason is None:
            self._stop_job("shutdown")
        return False

    # -------------------------------------------------------------------------------------- the worker
    def _ensure_worker(self) -> None:
        now = time.monotonic()
        if self.proc is not None:
            if not self.ready and now > self._start_deadline:
                limit = self.config.worker_start_timeout_s
                self.fatal = (f"the worker did not become ready within {limit:g} s (fix: check the worker "
                              "log; a cold JIT cache compiles every kernel once)")
                log.error("worker start timed out", extra=fields(pid=self.proc.pid))
                self.proc.kill()
            return
        if self.draining or now < self._next_start:
            return
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        cfg = self.config
        settings = WorkerSettings(cfg.runner, cfg.pipeline, cfg.log_level, os.getpid(), cfg.worker_nice,
                                  cfg.ray if cfg.backend is Backend.RAY else None)
        self.proc = ctx.Process(target=worker_main, args=(child, settings), name="assetgen-worker")
        self.proc.start()
        child.close()
        self.conn = parent
        if self._starts:
            self.metrics.worker_restarts.inc()
        self._starts += 1
        self._start_deadline = now + self.config.worker_start_timeout_s
        log.info("worker starting", extra=fields(pid=self.proc.pid, runner=self.config.runner.value))

    def _receive(self) -> bool:
        """Handle every waiting message; False once the pipe is closed (the worker is gone)."""
        while self.conn is not None:
            try:
                if not self.conn.poll():
                    return True
                message = self.conn.recv()
            except (EOFError, OSError):
                return False
            self._handle(message)
        return False

    def _send(self, message: tuple) -> bool:
        """Send to the worker; False when it is gone (its sentinel reports the death next)."""
        try:
            self.conn.send(message)
            return True
        except (OSError, ValueError):
            return False

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "progress":
            _, job_id, _index, count, stage, seconds = message
            self.board.stage(job_id, count, stage, seconds)
            if seconds is not None:
                self.metrics.stage_seconds.observe(seconds, stage)
        elif kind == "ready":
            self.ready, self.fatal, self.worker_info = True, None, message[1]
            self._failed_starts = 0
            self.metrics.worker_ready.set(1)
            self.metrics.warmup_seconds.set(message[1].get("build_s", 0) + message[1].get("warmup_s", 0))
            self.metrics.gpu_memory_seen(message[1].get("gpu_memory"))
            log.info("worker ready", extra=fields(**message[1]))
        elif kind == "fatal":
            self.fatal = message[1]
            log.error("worker start-up failed", extra=fields(error=message[1]))
        elif kind in ("done", "failed", "stopped"):
            self._job_answered(kind, message[1], message[2])

    def _job_answered(self, kind: str, job_id: str, payload) -> None:
        running = self.running
        if running is None or running.job_id != job_id:
            log.warning("answer for a job that is not running", extra=fields(job_id=job_id, kind=kind))
            return
        if kind == "done":
            self._finish(JobState.SUCCEEDED, result=payload)
        elif kind == "failed":
            self._finish(JobState.FAILED, error=payload)
        elif payload == "canceled":
            self._finish(JobState.CANCELED, error="canceled while running (stopped at a stage boundary)")
        elif payload == "timeout":
            self._finish(JobState.FAILED, error=self._timeout_message(running))
        else:  # shutdown: run it again on the next start
            self.store.requeue(job_id)
            self.board.finished(job_id)
            self.running = None
            log.info("job requeued for the next start", extra=fields(job_id=job_id))

    def _finish(self, state: JobState, *, error: str | None = None, result: dict | None = None) -> None:
        running, self.running = self.running, None
        live = self.board.get(running.job_id)
        if result is None and live is not None:
            result = {"stages": live.stages, "progress": live.percent}
        job = self.store.finish(running.job_id, state, error=error, result=result)
        self.board.finished(running.job_id)
        run_s = time.monotonic() - running.started
        self.metrics.job_finished(state.value, run_s, result)
        log.info("job finished", extra=fields(job_id=running.job_id, state=state.value,
                                              seconds=round(run_s, 3), error=error))
        if job is None:
            log.warning("finished job was not in progress", extra=fields(job_id=running.job_id))

    def _worker_died(self) -> None:
        code = self.proc.exitcode
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        log.error("worker died", extra=fields(pid=self.proc.pid, exit=how,
                                              job_id=self.running.job_id if self.running else None))
        self.conn.close()
        self.proc, self.conn = None, None
        was_ready, self.ready = self.ready, False
        self.metrics.worker_ready.set(0)
        if not was_ready:
            self._failed_starts += 1
        backoff = RESTART_BACKOFF_S[min(self._failed_starts, len(RESTART_BACKOFF_S) - 1)]
        self._next_start = time.monotonic() + backoff
        running = self.running
        if running is None:
            return
        if running.stop_reason == "timeout":
            self._finish(JobState.FAILED, error=self._timeout_message(running))
        elif running.stop_reason == "canceled":
            self._finish(JobState.CANCELED, error="canceled while running (the worker was stopped)")
        elif running.stop_reason == "shutdown":
            self._job_answered("stopped", running.job_id, "shutdown")
        else:
            self._finish(JobState.FAILED, error=(
                f"the worker process died while running this job ({how}) (fix: retry; if it repeats, lower "
                "faces or texture_size: a crash or the out-of-memory killer stopped the engine)"))

    def _stop_worker(self) -> None:
        if self.proc is None:
            return
        self._send(("shutdown",))
        self.proc.join(timeout=self.config.kill_grace_s)
        if self.proc.is_alive():
            log.warning("worker did not stop; killing it", extra=fields(pid=self.proc.pid))
            self.proc.kill()
            self.proc.join(timeout=5.0)
        self._reap_group()
        self.conn.close()
        self.proc, self.conn, self.ready = None, None, False
        self.metrics.worker_ready.set(0)

    def _reap_group(self) -> None:
        """--backend ray with a local Ray instance: the worker leads a process group holding that instance
        (engine/service/worker.py); once the worker is gone, end what is left of it (Ray's node agents
        outlive a killed driver)."""
        if self.config.backend is not Backend.RAY or self.config.ray.address is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # nothing left
            pass

    # ------------------------------------------------------------------------------------------- jobs
    def _dispatch(self) -> None:
        if not self.ready or self.running is not None or self.draining:
            return
        job = self.store.claim_next()
        if job is None:
            return
        job_dir = self.config.jobs_dir / job.id
        options = JobOptions(**job.options)
        try:
            config = job_config(self.config.pipeline, options)
        except ConfigError as err:  # validated at submission; a config change between restarts lands here
            self.running = Running(job.id, time.monotonic(), job.timeout_s)
            self._finish(JobState.FAILED, error=str(err))
            return
        ticket = JobTicket(job.id, job_dir / job.picture, job_dir, config, options.segmenter, job.options)
        if not self._send(("run", ticket)):
            self.store.requeue(job.id)
            return
        self.running = Running(job.id, time.monotonic(), job.timeout_s)
        self.board.started(job.id)
        self.metrics.queue_seconds.observe(max(0.0, job.started_at - job.created_at))
        log.info("job dispatched", extra=fields(job_id=job.id, attempt=job.attempts))

    def _stop_job(self, reason: str) -> None:
        running = self.running
        if running is None or running.stop_reason is not None or self.conn is None:
            return
        running.stop_reason, running.stop_sent = reason, time.monotonic()
        self._send(("stop_job", running.job_id, reason))
        log.info("stop requested", extra=fields(job_id=running.job_id, reason=reason))

    def _check_time(self) -> None:
        running = self.running
        if running is None:
            return
        now = time.monotonic()
        if running.stop_reason is None and now - running.started > running.timeout_s:
            self._stop_job("timeout")
        elif running.stop_sent is not None and now - running.stop_sent > self.config.kill_grace_s:
            log.warning("job did not stop at a stage boundary; killing the worker",
                        extra=fields(job_id=running.job_id, reason=running.stop_reason))
            running.stop_sent = float("inf")  # once
            self.proc.kill()

    @staticmethod
    def _timeout_message(running: Running) -> str:
        return (f"the job ran longer than its time limit of {running.timeout_s:g} s (fix: lower faces or "
                "texture_size, or submit a longer timeout_s within the server's --job-timeout)")

    # ---------------------------------------------------------------------------------------- storage
    def _sweep_expired(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(max(self.config.result_ttl_s / 4, 0.1), 30.0)
        for job_id in self.store.expire_due(self.config.result_ttl_s):
            shutil.rmtree(self.config.jobs_dir / job_id, ignore_errors=True)
            self.board.notify(job_id)
            log.info("job expired", extra=fields(job_id=job_id))

    def _sweep_folders(self) -> None:
        """At start: remove job folders with no stored job (an upload cut off by a crash) or whose job
        expired (a crash between expiry and deletion)."""
        jobs_dir: Path = self.config.jobs_dir
        jobs_dir.mkdir(parents=True, exist_ok=True)
        known, expired = self.store.ids(), self.store.expired_ids()
        for folder in jobs_dir.iterdir():
            if folder.name not in known or folder.name in expired:
                shutil.rmtree(folder, ignore_errors=True)
