"""A small Python client of the service, standard library only (``http.client``).

    from engine.service.client import ServiceClient

    client = ServiceClient("http://127.0.0.1:8000")
    job = client.submit("crate.png", faces=10000)              # 202: {"id": ..., "state": "pending", ...}
    done = client.wait(job["id"], timeout=600)                 # follows the event stream (or polls)
    client.download(job["id"], "crate.glb")                    # atomic write
    client.cancel(other_id)

One client keeps one keep-alive connection: use one client per thread. Every call has a socket timeout;
``wait`` also has an overall deadline. Errors raise ``ServiceError`` with the status and the server's
one-line message; 429 raises ``QueueFullError`` carrying ``retry_after`` seconds (``submit(...,
retry_for=S)`` retries for up to S seconds, honouring it). Each ``submit`` sends an ``Idempotency-Key``
(a fresh UUID unless given), so a retry after a lost answer never makes a second job.
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from engine.io.atomic import atomic_write_bytes

TERMINAL = ("succeeded", "failed", "canceled", "expired")


class ServiceError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class QueueFullError(ServiceError):
    def __init__(self, status: int, message: str, retry_after: float) -> None:
        super().__init__(status, message)
        self.retry_after = retry_after


class ServiceClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"base_url must look like http://host:port, got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --------------------------------------------------------------------------------------------- calls
    def submit(self, picture: str | os.PathLike | bytes, *, filename: str = "picture.png",
               idempotency_key: str | None = None, retry_for: float = 0.0, **options) -> dict:
        """Upload a picture (a path or its bytes) with job options (preset, faces, texture_size,
        normal_map_size, seed, placement, uv, segmenter, timeout_s); returns the job's view."""
        if not isinstance(picture, bytes):
            filename = Path(picture).name
            picture = Path(picture).read_bytes()
        body, content_type = _multipart(picture, filename, options)
        headers = {"Content-Type": content_type, "Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        deadline = time.monotonic() + retry_for
        while True:
            try:
                return self._json("POST", "/v1/jobs", body, headers)
            except QueueFullError as full:
                pause = max(0.05, full.retry_after)
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)

    def status(self, job_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict:
        return self._json("DELETE", f"/v1/jobs/{job_id}")

    def health(self) -> dict:
        return self._json("GET", "/healthz")

    def get(self, path: str) -> dict:
        """Any JSON answer of the server, e.g. ``get("/readyz")`` or ``get("/openapi.json")``."""
        return self._json("GET", path)

    def ready(self) -> bool:
        try:
            self._json("GET", "/readyz")
            return True
        except ServiceError:
            return False

    def metrics(self) -> str:
        return self._request("GET", "/metrics")[1].decode()

    def download(self, job_id: str, path: str | os.PathLike) -> Path:
        """The job's GLB, written atomically to ``path``."""
        _, data = self._request("GET", f"/v1/jobs/{job_id}/result.glb")
        atomic_write_bytes(path, data)
        return Path(path)

    def events(self, job_id: str, timeout: float | None = None) -> Iterator[dict]:
        """The job's views as the server streams them (a new connection; ends at a terminal state)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)
        try:
            conn.request("GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"})
            response = conn.getresponse()
            if response.status != 200:
                raise _error(response.status, response.read(), response.getheader("Retry-After"))
            data: list[str] = []
            while True:
                line = response.readline()
                if not line:
                    return
                text = line.decode().rstrip("\r\n")
                if text.startswith("data:"):
                    data.append(text[5:].strip())
                elif not text and data:
                    yield json.loads("\n".join(data))
                    data = []
        finally:
            conn.close()

    def wait(self, job_id: str, timeout: float = 600.0, *, stream: bool = True,
             poll_interval: float = 0.25) -> dict:
        """Block until the job is terminal (succeeded, failed, canceled, expired); returns its view.
        Raises TimeoutError after ``timeout`` seconds. ``stream``: follow the event stream, else poll."""
        deadline = time.monotonic() + timeout
        if stream:
            try:
                for view in self.events(job_id, timeout=min(timeout, 60.0)):
                    if view["state"] in TERMINAL:
                        return view
                    if time.monotonic() > deadline:
                        break
            except (OSError, http.client.HTTPException):
                pass  # the stream broke (server restarting): fall back to polling
        while time.monotonic() < deadline:
            try:
                view = self.status(job_id)
                if view["state"] in TERMINAL:
                    return view
            except (OSError, http.client.HTTPException):
                self.close()
            time.sleep(poll_interval)
        raise TimeoutError(f"job {job_id} not finished after {timeout:g} s")

    # ------------------------------------------------------------------------------------------ plumbing
    def _json(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> dict:
        return json.loads(self._request(method, path, body, headers)[1])

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict | None = None) -> tuple[int, bytes]:
        """One request on the kept connection (reopened once if the server closed it while idle)."""
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                response = self._conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
            except BaseException:  # timeouts, refused connections: a fresh connection next time
                self.close()
                raise
        if response.status >= 400:
            raise _error(response.status, data, response.getheader("Retry-After"))
        return response.status, data


def _error(status: int, data: bytes, retry_after: str | None) -> ServiceError:
    try:
        message = json.loads(data).get("detail", "")
    except (ValueError, AttributeError):
        message = data.decode(errors="replace")[:500]
    if status == 429:
        return QueueFullError(status, message, float(retry_after or 1))
    return ServiceError(status, str(message))


def _multipart(picture: bytes, filename: str, options: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    parts = []
    for name, value in options.items():
        if value is not None:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                         .encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                 f"Content-Type: {kind}\r\n\r\n".encode() + picture + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
