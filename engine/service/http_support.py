"""HTTP plumbing of the service: one-line error answers, the upload gate, request metrics, the picture
check at the door, and the job's JSON view.

Every error answer is ``{"detail": "<problem> (fix: <fix>)"}``, the CLI's one-line message, with the status
that says who must act: 404 unknown job, 409 wrong state, 410 expired, 411/413 upload size, 415 not a
picture, 422 bad option or corrupt picture, 429 queue full (``Retry-After``), 503 not ready/shutting down.
"""

from __future__ import annotations

import io
import time
from collections.abc import Awaitable, Callable

from fastapi.responses import JSONResponse

from engine.errors import InputImageError
from engine.service.jobs_store import Job, JobState, JobStore
from engine.service.metrics import ServiceMetrics
from engine.service.progress_board import ProgressBoard

UPLOAD_PATH = "/v1/jobs"
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and option fields beside the picture


class ApiError(Exception):
    """An answer other than success: status, one-line message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.message}, status_code=self.status, headers=self.headers)


def validation_message(errors: list[dict]) -> str:
    """FastAPI's request-validation errors as one line naming the first bad field."""
    first = errors[0] if errors else {"loc": ("request",), "msg": "invalid"}
    name = str(first["loc"][-1]) if first.get("loc") else "request"
    return f"option '{name}': {first.get('msg', 'invalid')} (fix: correct {name} and submit again)"


class GateAndMeasure:
    """ASGI middleware: refuses an upload before its body is read when it is too large (413, or 411
    without a Content-Length) or when ``admit(idempotency_key)`` says so (a full queue: 429), and times
    every request into ``assetgen_http_request_seconds`` by route template."""

    def __init__(self, app, metrics: ServiceMetrics, max_upload_bytes: int,
                 admit: Callable[[str | None], Awaitable[ApiError | None]]) -> None:
        self.app, self.metrics, self.limit, self.admit = app, metrics, max_upload_bytes, admit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_measured(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        refusal = await self._gate(scope)
        if refusal is not None:
            await refusal.response()(scope, receive, send_measured)
        else:
            await self.app(scope, receive, send_measured)
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"  # bounded labels, whatever the paths
        method = scope["method"]
        self.metrics.http_seconds.observe(time.perf_counter() - t0, method, template)
        self.metrics.http_requests.inc(method, template, str(status["code"]))

    async def _gate(self, scope) -> ApiError | None:
        if scope["method"] != "POST" or scope["path"].rstrip("/") != UPLOAD_PATH:
            return None
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is None:
            return ApiError(411, "upload has no Content-Length (fix: send the picture as multipart/form-data "
                                 "with a Content-Length header, as curl -F does)")
        if not length.isdigit() or int(length) > self.limit + FORM_OVERHEAD:
            return ApiError(413, too_large_message(int(length) if length.isdigit() else -1, self.limit))
        key = headers.get(b"idempotency-key")
        return await self.admit(key.decode("latin-1") if key is not None else None)


def too_large_message(size: int, limit: int) -> str:
    return (f"upload is {size} bytes, limit {limit} bytes (fix: downscale or recompress the picture, or "
            f"start the server with a larger --max-upload-mb)")


def check_picture(data: bytes, name: str, max_pixels: int) -> str:
    """Decode the upload with the engine's own checks (engine/io/image_input.py) before it is queued;
    returns its format's file suffix (".png", ...). Raises ApiError 413 (too many pixels), 415 (not a
    picture) or 422 (empty, corrupt) with the engine's one-line message."""
    from PIL import Image, UnidentifiedImageError

    from engine.io.image_input import decode_image_bytes

    what = f"upload '{name}'"
    try:
        decode_image_bytes(data, what, max_pixels)
    except InputImageError as err:
        raise ApiError(_picture_status(data, max_pixels), str(err)) from None
    try:
        kind = (Image.open(io.BytesIO(data)).format or "img").lower()
    except (UnidentifiedImageError, OSError):  # decoded above, so not expected
        kind = "img"
    return "." + {"jpeg": "jpg"}.get(kind, kind)


def _picture_status(data: bytes, max_pixels: int) -> int:
    from PIL import Image

    if not data:
        return 422
    try:
        width, height = Image.open(io.BytesIO(data)).size
    except Image.UnidentifiedImageError:
        return 415
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return 422
    return 413 if width * height > min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels) else 422


def job_view(job: Job, store: JobStore, board: ProgressBoard, result_ttl_s: float) -> dict:
    """The JSON answer of ``GET /v1/jobs/{id}`` (and each event of its stream)."""
    live = board.get(job.id) if job.state is JobState.IN_PROGRESS else None
    stored = job.result or {}
    if job.state is JobState.SUCCEEDED:
        progress = 100.0
    elif live is not None:
        progress = live.percent
    else:
        progress = stored.get("progress", 0.0)
    now = time.time()
    run_end = job.finished_at or (now if job.started_at else None)
    view = {
        "id": job.id,
        "state": job.state.value,
        "stage": live.stage if live else None,
        "progress": progress,
        "queue_position": store.queue_position(job) or None,
        "options": job.options,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "expires_at": job.finished_at + result_ttl_s if job.finished_at else None,
        "timings": {
            "queued_s": round((job.started_at or now) - job.created_at, 6),
            "run_s": round(run_end - job.started_at, 6) if job.started_at and run_end else None,
            "engine_s": stored.get("wall_s"),  # the engine's critical path (its stage timer), once done
            "stages": live.stages if live else stored.get("stages", {}),
        },
        "result": None,
    }
    if job.state is JobState.SUCCEEDED:
        view["result"] = {"url": f"/v1/jobs/{job.id}/result.glb", "bytes": stored.get("bytes"),
                          "faces": stored.get("faces"), "vertices": stored.get("vertices"),
                          "sources": stored.get("sources", {})}
        if "gpu_memory" in stored:  # CUDA: the worker's memory after the job, the job's peak (bytes)
            view["result"]["gpu_memory"] = stored["gpu_memory"]
        if "replicas" in stored:  # --backend ray: where each half ran
            view["result"]["replicas"] = stored["replicas"]
    return view
