"""The HTTP API (FastAPI): submit a picture, follow the job, fetch the GLB, cancel; health, readiness and
metrics. OpenAPI is served at ``/openapi.json`` (and ``/docs``).

    POST   /v1/jobs                  multipart: image + options; header Idempotency-Key -> 202 {job}
    GET    /v1/jobs/{id}             {job}: state, stage, progress 0-100, queue position, timings
    GET    /v1/jobs/{id}/events      text/event-stream of {job} changes; ends at a terminal state
    GET    /v1/jobs/{id}/result.glb  the asset (409 before it exists, 410 once expired)
    DELETE /v1/jobs/{id}             cancel: pending at once, running at its next stage boundary
    GET    /healthz  /readyz  /metrics

``create_app(config)`` builds the app around one ``ServiceState`` (store, progress board, metrics,
supervisor); its lifespan starts the supervisor (which spawns the worker) and drains it on shutdown.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import shutil
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse

from engine.errors import ConfigError
from engine.io.atomic import atomic_write_bytes
from engine.service.config import JobOptions, ServiceConfig, job_config, job_timeout
from engine.service.http_support import (
    ApiError,
    GateAndMeasure,
    check_picture,
    job_view,
    too_large_message,
    validation_message,
)
from engine.service.jobs_store import JobState, JobStore, QueueFull
from engine.service.logs import fields
from engine.service.metrics import ServiceMetrics
from engine.service.progress_board import ProgressBoard
from engine.service.supervisor import Supervisor

log = logging.getLogger("assetgen.api")
MAX_KEY_LENGTH = 200


class ServiceState:
    """What the routes share: built at app creation, started and stopped by the lifespan."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.metrics = ServiceMetrics()
        self.board = ProgressBoard()
        self.store: JobStore | None = None
        self.supervisor: Supervisor | None = None
        self.closing = False

    def start(self) -> None:
        self.config.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.config.database)
        self.supervisor = Supervisor(self.config, self.store, self.board, self.metrics)
        self.supervisor.start()

    def begin_shutdown(self) -> None:
        """First step of a graceful stop: refuse submissions, end the event streams."""
        self.closing = True
        self.board.close()
        if self.supervisor is not None:
            self.supervisor.begin_drain()

    def stop(self) -> None:
        self.begin_shutdown()
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.store is not None:
            self.store.close()

    async def admit(self, key: str | None) -> ApiError | None:
        """Before an upload is read: 503 while stopping, 429 when the queue is full (unless ``key`` names
        a known job: its replay is answered whatever the queue)."""
        if self.closing or self.store is None:
            return ApiError(503, "the server is shutting down (fix: submit again once it is back)",
                            {"Retry-After": "5"})
        pending = self.store.pending()
        if pending < self.config.queue_size:
            return None
        if key is not None and self.store.by_key(key) is not None:
            return None
        return _queue_full(self, pending)

    def job(self, job_id: str):
        job = self.store.get(job_id)
        if job is None:
            raise ApiError(404, f"no job '{job_id}' (fix: use the id answered by POST /v1/jobs)")
        return job

    def view(self, job) -> dict:
        return job_view(job, self.store, self.board, self.config.result_ttl_s)


def create_app(config: ServiceConfig) -> FastAPI:
    state = ServiceState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(state.start)
        try:
            yield
        finally:
            await asyncio.to_thread(state.stop)

    app = FastAPI(title="AssetGen service", version="1", lifespan=lifespan,
                  description="One picture -> one game-ready GLB, as asynchronous jobs.")
    app.state.service = state
    app.add_middleware(GateAndMeasure, metrics=state.metrics, max_upload_bytes=config.max_upload_bytes,
                       admit=state.admit)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        return JSONResponse({"detail": validation_message(err.errors())}, status_code=422)

    _job_routes(app, state)
    _ops_routes(app, state)
    return app


def _job_routes(app: FastAPI, state: ServiceState) -> None:
    config = state.config

    @app.post("/v1/jobs", status_code=202, summary="Submit a picture")
    def submit(image: UploadFile = File(..., description="PNG/JPEG/WebP picture of one object"),
               preset: str | None = Form(None), faces: int | None = Form(None),
               texture_size: int | None = Form(None), normal_map_size: int | None = Form(None),
               seed: int | None = Form(None), placement: str | None = Form(None), uv: str | None = Form(None),
               segmenter: str | None = Form(None), timeout_s: float | None = Form(None),
               idempotency_key: str | None = Header(None, alias="Idempotency-Key")) -> JSONResponse:
        data = image.file.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            raise ApiError(413, too_large_message(len(data), config.max_upload_bytes))
        try:
            options = JobOptions(preset=preset, faces=faces, texture_size=texture_size,
                                 normal_map_size=normal_map_size, seed=seed, placement=placement, uv=uv,
                                 segmenter=segmenter, timeout_s=timeout_s)
            job_config(config.pipeline, options)
            limit = job_timeout(config, options)
        except ConfigError as err:
            raise ApiError(422, str(err)) from None
        key = _check_key(idempotency_key)
        described = json.dumps(options.as_dict(), sort_keys=True).encode()
        fingerprint = hashlib.sha256(data + described).hexdigest()
        if key is not None and (existing := state.store.by_key(key)) is not None:
            return _replay(state, existing, fingerprint)
        suffix = check_picture(data, image.filename or "picture", config.max_pixels)
        return _accept(state, data, suffix, options, limit, key, fingerprint)

    @app.get("/v1/jobs/{job_id}", summary="A job's state, progress and timings")
    async def status(job_id: str) -> JSONResponse:
        return JSONResponse(state.view(state.job(job_id)))

    @app.get("/v1/jobs/{job_id}/events", summary="Server-sent events of the job's changes")
    async def events(job_id: str, request: Request) -> StreamingResponse:
        state.job(job_id)
        return StreamingResponse(_event_stream(state, job_id, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/jobs/{job_id}/result.glb", summary="The finished asset",
             response_class=FileResponse)
    def result(job_id: str):
        job = state.job(job_id)
        if job.state is JobState.EXPIRED:
            raise ApiError(410, f"job {job_id}'s result expired and was deleted (fix: submit the picture "
                                "again; results are kept --result-ttl seconds)")
        if job.state is not JobState.SUCCEEDED:
            why = f": {job.error}" if job.error else ""
            raise ApiError(409, f"job {job_id} is {job.state.value}{why} (fix: wait for state succeeded, "
                                f"e.g. GET /v1/jobs/{job_id}/events)")
        path = config.jobs_dir / job_id / "result.glb"
        if not path.is_file():
            raise ApiError(410, f"job {job_id}'s result is gone (fix: submit the picture again)")
        return FileResponse(path, media_type="model/gltf-binary", filename=f"{job_id}.glb")

    @app.delete("/v1/jobs/{job_id}", summary="Cancel a job")
    def cancel(job_id: str) -> JSONResponse:
        job = state.job(job_id)
        if job.state.terminal:
            raise ApiError(409, f"job {job_id} is already {job.state.value} (fix: nothing to cancel)")
        job = state.store.cancel(job_id)
        if job.state is JobState.IN_PROGRESS:
            state.supervisor.cancel(job_id)
        log.info("cancel requested", extra=fields(job_id=job_id, state=job.state.value))
        state.board.notify(job_id)
        return JSONResponse(state.view(job), status_code=202 if job.state is JobState.IN_PROGRESS else 200)


def _check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise ApiError(422, f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters (fix: use e.g. a UUID)")
    return key


def _replay(state: ServiceState, job, fingerprint: str) -> JSONResponse:
    """A submission whose Idempotency-Key is known: the same request answers the existing job (200)."""
    if job.fingerprint != fingerprint:
        raise ApiError(422, f"Idempotency-Key '{job.idempotency_key}' was used for a different picture or "
                            "options (fix: use a new key for a new job)")
    return JSONResponse(state.view(job), status_code=200, headers={"Location": f"/v1/jobs/{job.id}",
                                                                   "Idempotent-Replayed": "true"})


def _accept(state: ServiceState, data: bytes, suffix: str, options: JobOptions, limit: float,
            key: str | None, fingerprint: str) -> JSONResponse:
    """Write the upload (atomically), then record the job: the row never points at a missing file."""
    config = state.config
    job_id = uuid.uuid4().hex
    folder = config.jobs_dir / job_id
    folder.mkdir(parents=True)
    try:
        atomic_write_bytes(folder / f"input{suffix}", data)
        job, created = state.store.insert(job_id=job_id, key=key, fingerprint=fingerprint,
                                          options=options.as_dict(), picture=f"input{suffix}",
                                          timeout_s=limit, queue_size=config.queue_size)
    except QueueFull as full:
        shutil.rmtree(folder, ignore_errors=True)
        raise _queue_full(state, full.pending) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if not created:  # another request with the same key got there first
        shutil.rmtree(folder, ignore_errors=True)
        return _replay(state, job, fingerprint)
    state.supervisor.wake()
    log.info("job accepted", extra=fields(job_id=job_id, options=options.as_dict(), bytes=len(data)))
    return JSONResponse(state.view(job), status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})


def _queue_full(state: ServiceState, pending: int) -> ApiError:
    wait = _retry_after(state, pending)
    return ApiError(429, f"the queue is full ({pending} jobs waiting) (fix: retry after {wait} s, as the "
                         "Retry-After header says)", {"Retry-After": str(wait)})


def _retry_after(state: ServiceState, pending: int) -> int:
    """Seconds until a queue slot is likely free: about one job's run time (at least 1 s)."""
    return max(1, min(3600, math.ceil(state.metrics.job_ema_s or 1.0)))


async def _event_stream(state: ServiceState, job_id: str, request: Request):
    """``event: status`` with the job's view at each change; ends after a terminal state (or at
    shutdown). A pending job is re-read every second (its queue position moves without an event)."""
    last = None
    count = 0
    while True:
        event = state.board.subscribe(job_id)
        try:
            view = state.view(state.store.get(job_id))
            key = (view["state"], view["stage"], view["progress"], view["queue_position"],
                   view["cancel_requested"])
            if key != last:
                last, count = key, count + 1
                yield f"event: status\nid: {count}\ndata: {json.dumps(view)}\n\n"
            if JobState(view["state"]).terminal or state.board.closing:
                return
            try:
                await asyncio.wait_for(event.wait(), 1.0 if view["state"] == "pending" else 15.0)
            except TimeoutError:
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
        finally:
            state.board.unsubscribe(job_id, event)


def _ops_routes(app: FastAPI, state: ServiceState) -> None:
    @app.get("/healthz", summary="Liveness: the server answers")
    async def healthz() -> dict:
        sup = state.supervisor
        return {"status": "ok", "worker_pid": sup.proc.pid if sup and sup.proc else None,
                "worker_ready": bool(sup and sup.ready), "closing": state.closing}

    @app.get("/readyz", summary="Readiness: 200 once the worker's engine is warm")
    async def readyz() -> JSONResponse:
        sup = state.supervisor
        if sup is None or not sup.ready or state.closing:
            reason = ("shutting down" if state.closing else (sup.fatal if sup and sup.fatal else
                                                              "the worker's engine is starting"))
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        return JSONResponse({"ready": True, "worker": sup.worker_info})

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        counts = {s.value: n for s, n in state.store.counts().items()}
        return PlainTextResponse(state.metrics.render(counts), media_type="text/plain; version=0.0.4")
