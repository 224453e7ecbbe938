"""The HTTP contract of ``assetgen serve`` on loopback, with the real engine in its worker process at the
engine's smallest CPU settings (benchmarks/service_load.py ``tiny_pipeline``): submit -> follow (events
and polling) -> download; one-line 4xx answers for bad uploads and options; idempotency; cancellation of
pending and running jobs; a per-job time limit; a worker killed mid-job; health, readiness, metrics,
OpenAPI and JSON logs. Every wait has a deadline."""

from __future__ import annotations

import io
import json
import os
import signal
import time

import numpy as np
import pytest
from conftest import IMAGES

from benchmarks.service_server import ServerProcess, server_job_count, wait_gone
from engine.io.glb_export import read_glb_summary
from engine.service.client import ServiceClient, ServiceError

CRATE = IMAGES / "typical_misc_crate.png"
MAX_UPLOAD = 2 * 1024 * 1024
MAX_PIXELS = 1_000_000
READY_S = 600  # a cold JIT cache compiles every kernel once (~1 min on 2 cores); warm: ~5 s


@pytest.fixture(scope="module")
def server(shared_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("service-api")
    with ServerProcess(tmp / "data", tmp / "server.log", runner="engine", queue_size=4,
                       max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS, job_timeout_s=120.0,
                       kill_grace_s=5.0) as srv:
        srv.wait_ready(READY_S)
        yield srv


@pytest.fixture
def client(server):
    with ServiceClient(server.url, timeout=30.0) as c:
        yield c


def _wait_state(client, job_id, states, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.status(job_id)
        if view["state"] in states:
            return view
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} not in {states} after {timeout} s: {view}")


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = (200, 120, 40, 255)
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    return buf.getvalue()


def test_submit_follow_events_and_download(server, client, tmp_path):
    job = client.submit(CRATE, faces=800, seed=7)
    assert job["state"] in ("pending", "in_progress") and job["options"] == {"faces": 800, "seed": 7}
    views = list(client.events(job["id"], timeout=60))
    states = [v["state"] for v in views]
    assert states[-1] == "succeeded" and "in_progress" in states
    progress = [v["progress"] for v in views]
    assert progress == sorted(progress) and progress[-1] == 100.0
    assert any(v["stage"] for v in views if v["state"] == "in_progress")
    done = client.status(job["id"])
    assert done["timings"]["run_s"] > 0 and "export glb" in done["timings"]["stages"]
    assert 0 < done["timings"]["engine_s"] <= done["timings"]["run_s"]  # the engine's critical path
    assert "gpu_memory" not in done["result"]  # a CPU worker has no GPU figure to report
    assert done["queue_position"] is None and done["expires_at"] > done["finished_at"]
    path = client.download(job["id"], tmp_path / "crate.glb")
    glb = read_glb_summary(path)
    assert 0 < glb["faces"] <= 800 and glb["faces"] == done["result"]["faces"]
    assert all(glb[k] for k in ("has_uv", "has_tangents", "has_normal_map", "has_base_color"))
    assert path.stat().st_size == done["result"]["bytes"]
    assert client.wait(job["id"], timeout=5, stream=False)["state"] == "succeeded"   # the polling path


def test_bad_uploads_and_options_answer_one_line_4xx(server, client):
    before_jobs, before_dirs = server_job_count(client), set(os.listdir(server.data_dir / "jobs"))
    cases = [
        (dict(picture=os.urandom(MAX_UPLOAD + 200_000), filename="big.png"), 413, "upload is"),
        (dict(picture=_png(1200, 1000), filename="wide.png"), 413, "too large"),
        (dict(picture=b"hello, not a picture", filename="note.png"), 415, "not a readable image"),
        (dict(picture=CRATE.read_bytes()[:2000], filename="cut.png"), 422, "corrupt or truncated"),
        (dict(picture=b"", filename="empty.png"), 422, "empty"),
        (dict(picture=CRATE, faces=2), 422, "face budget 2 is below 4"),
        (dict(picture=CRATE, texture_size=100), 422, "not a power of two"),
        (dict(picture=CRATE, faces="many"), 422, "option 'faces'"),
        (dict(picture=CRATE, preset="default"), 422, "not served here"),
        (dict(picture=CRATE, segmenter="onnx:/tmp/m.onnx"), 422, "unknown segmenter"),
        (dict(picture=CRATE, timeout_s=10_000), 422, "exceeds this server's limit"),
    ]
    for kwargs, status, words in cases:
        with pytest.raises(ServiceError) as err:
            client.submit(**kwargs)
        assert err.value.status == status, (kwargs.get("filename"), err.value)
        assert words in err.value.message and "(fix: " in err.value.message
        assert "\n" not in err.value.message
    for call, status in [(lambda: client.status("nope"), 404), (lambda: client.cancel("nope"), 404)]:
        with pytest.raises(ServiceError) as err:
            call()
        assert err.value.status == status and "(fix: " in err.value.message
    assert server_job_count(client) == before_jobs                        # nothing was queued ...
    assert set(os.listdir(server.data_dir / "jobs")) == before_dirs        # ... nor left on disk


def test_idempotency_key_makes_one_job(server, client):
    before = server_job_count(client)
    first = client.submit(CRATE, idempotency_key="same-key-1", faces=600)
    second = client.submit(CRATE, idempotency_key="same-key-1", faces=600)
    assert first["id"] == second["id"] and server_job_count(client) == before + 1
    with pytest.raises(ServiceError) as err:
        client.submit(CRATE, idempotency_key="same-key-1", faces=700)
    assert err.value.status == 422 and "different picture or options" in err.value.message
    assert client.wait(first["id"], timeout=60)["state"] == "succeeded"
    assert client.submit(CRATE, idempotency_key="same-key-1", faces=600)["state"] == "succeeded"


def test_cancel_pending_at_once_and_running_at_a_stage_boundary(server, client):
    running = client.submit(CRATE, faces=1000)
    queued = client.submit(CRATE, faces=900)
    last = client.submit(CRATE, faces=800)
    _wait_state(client, running["id"], ("in_progress",))
    canceled = client.cancel(last["id"])
    assert canceled["state"] == "canceled"                                # pending: at once
    stopping = client.cancel(running["id"])
    assert stopping["state"] == "in_progress" and stopping["cancel_requested"]
    final = client.wait(running["id"], timeout=60)
    assert final["state"] == "canceled" and final["progress"] < 100
    for job_id in (running["id"], last["id"]):
        with pytest.raises(ServiceError) as err:
            client.download(job_id, server.data_dir / "never.glb")
        assert err.value.status == 409
        assert not (server.data_dir / "jobs" / job_id / "result.glb").exists()
    with pytest.raises(ServiceError) as err:
        client.cancel(running["id"])
    assert err.value.status == 409 and "already canceled" in err.value.message
    assert client.wait(queued["id"], timeout=60)["state"] == "succeeded"  # the queue goes on
    assert client.status(last["id"])["started_at"] is None                # the canceled one never ran


def test_job_time_limit_fails_the_job_and_the_next_runs(server, client):
    slow = client.submit(CRATE, timeout_s=0.05)
    failed = client.wait(slow["id"], timeout=60)
    assert failed["state"] == "failed" and "time limit of 0.05 s" in failed["error"]
    assert "(fix: " in failed["error"]
    assert client.wait(client.submit(CRATE, faces=700)["id"], timeout=60)["state"] == "succeeded"


def test_worker_killed_mid_job_fails_that_job_and_a_new_worker_serves(server, client):
    old = server.worker_pid()
    victim = client.submit(CRATE, faces=1000)
    _wait_state(client, victim["id"], ("in_progress",))
    os.kill(old, signal.SIGKILL)
    failed = client.wait(victim["id"], timeout=30)
    assert failed["state"] == "failed" and "worker process died" in failed["error"]
    assert "SIGKILL" in failed["error"] and "(fix: " in failed["error"]
    assert wait_gone(old, 5.0)
    server.wait_ready(READY_S)
    assert server.worker_pid() != old
    after = client.submit(CRATE, faces=700)
    assert client.wait(after["id"], timeout=60)["state"] == "succeeded"
    assert "assetgen_worker_restarts_total 1" in client.metrics().splitlines()


def test_health_readiness_metrics_openapi_and_logs(server, client):
    assert client.health()["status"] == "ok" and client.ready()
    ready = client.get("/readyz")
    assert ready["worker"]["runner"] == "engine" and ready["worker"]["warmup_s"] > 0
    assert ready["worker"]["gpu_memory"] is None  # CPU: absent, not 0
    metrics = client.metrics()
    assert "# TYPE assetgen_gpu_memory_bytes gauge" in metrics and "assetgen_gpu_memory_bytes{" not in metrics
    for name in ("assetgen_queue_depth ", 'assetgen_jobs{state="succeeded"}', "assetgen_job_seconds_bucket",
                 'assetgen_stage_seconds_bucket{stage="export glb"', "assetgen_worker_ready 1",
                 'assetgen_http_request_seconds_count{method="GET",route="/v1/jobs/{job_id}"}',
                 'assetgen_http_requests_total{method="POST",route="/v1/jobs",status="202"}'):
        assert name in metrics, name
    paths = client.get("/openapi.json")["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/result.glb",
            "/healthz", "/readyz", "/metrics"} <= set(paths)
    assert "delete" in paths["/v1/jobs/{job_id}"]
    records = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
    job_lines = [r for r in records if r.get("job_id")]
    assert {r["process"] for r in job_lines} == {"server", "worker"}
    assert {"job accepted", "job dispatched", "job finished", "job started"} <= {r["msg"] for r in job_lines}
