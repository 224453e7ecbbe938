"""``assetgen serve`` under load on loopback with the card runner (a real, cheap job: the engine's picture
preparation and GLB export; engine/service/runners.py): 16 clients x 200 submissions against a queue of 8
(a full queue answers 429 with Retry-After; no accepted job lost, none duplicated, every GLB matches its
job's report), a 200-job soak (resident memory of the server and the worker), and result expiry.

The status-call p50/p99 and the RSS growth are printed, not asserted (benchmarks, not timed tests: the
table is benchmarks/results/service_cpu.md, written by ``python -m benchmarks.service_load``); the soak
asserts only a loose leak guard."""

from __future__ import annotations

import os
import signal
import time

import pytest

from benchmarks.service_load import run_load, run_soak
from benchmarks.service_server import ServerProcess, load_pictures
from engine.service.client import QueueFullError, ServiceClient, ServiceError

OPTIONS = {"texture_size": 64, "faces": 200}


@pytest.fixture(scope="module")
def pictures(shared_dir, tmp_path_factory):
    return load_pictures(tmp_path_factory.mktemp("pictures"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("service-load")
    with ServerProcess(tmp / "data", tmp / "server.log", runner="card", queue_size=8) as srv:
        srv.wait_ready(60)
        yield srv


def _report(capsys, text: str) -> None:
    with capsys.disabled():
        print(f"\n[service] {text}", flush=True)


def test_load_16_clients_200_jobs(server, pictures, capsys):
    report = run_load(server.url, pictures, clients=16, submissions=200, options=OPTIONS, timeout_s=240)
    _report(capsys, report.line())
    assert not report.errors, report.errors[:5]
    assert len(report.accepted) == 200 and report.rejected_429 > 0      # the bound was reached and held
    assert report.lost == [] and report.duplicates == 0 and report.server_jobs == 200
    assert report.verified == 200


def test_queue_full_answer_carries_retry_after(server, pictures):
    """With the worker paused (SIGSTOP) the queue fills: the 10th submission (1 running + 8 pending)
    is refused and told when to retry; resumed, every accepted job finishes."""
    worker = server.worker_pid()
    accepted, refusal = [], None
    with ServiceClient(server.url) as client:
        os.kill(worker, signal.SIGSTOP)
        try:
            for _ in range(12):
                try:
                    accepted.append(client.submit(pictures[0], **OPTIONS)["id"])
                except QueueFullError as full:
                    refusal = full
                    break
        finally:
            os.kill(worker, signal.SIGCONT)
        assert len(accepted) in (8, 9)                                  # 8 pending (+1 dispatched)
        assert refusal is not None and refusal.status == 429 and refusal.retry_after >= 1
        assert "queue is full" in refusal.message and "(fix: " in refusal.message
        for job_id in accepted:
            assert client.wait(job_id, timeout=60)["state"] == "succeeded"


def test_soak_200_jobs_memory(server, pictures, capsys):
    soak = run_soak(server, pictures, jobs=200, warmup=20, clients=4, options=OPTIONS, timeout_s=240)
    _report(capsys, soak.line())
    assert not soak.load.errors and soak.load.lost == [] and soak.load.duplicates == 0
    assert soak.growth(soak.server_rss) < 25.0 and soak.growth(soak.worker_rss) < 25.0   # a leak guard


def test_results_expire(pictures, tmp_path):
    with ServerProcess(tmp_path / "data", tmp_path / "server.log", runner="card", result_ttl_s=1.0) as srv:
        srv.wait_ready(60)
        with ServiceClient(srv.url) as client:
            job = client.submit(pictures[0], **OPTIONS)
            assert client.wait(job["id"], timeout=30)["state"] == "succeeded"
            client.download(job["id"], tmp_path / "kept.glb")
            deadline = time.monotonic() + 15
            while client.status(job["id"])["state"] != "expired" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert client.status(job["id"])["state"] == "expired"
            with pytest.raises(ServiceError) as err:
                client.download(job["id"], tmp_path / "gone.glb")
            assert err.value.status == 410 and "expired" in err.value.message
            assert not (srv.data_dir / "jobs" / job["id"]).exists()
