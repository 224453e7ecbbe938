"""Nothing accepted is lost: ``assetgen serve`` (real engine, smallest CPU settings) killed with SIGKILL
mid-job restarts from its SQLite file and finishes every accepted job (the interrupted one runs again);
its orphaned worker exits by itself. SIGTERM stops it cleanly (exit 0): the running job gets the shutdown
grace, then is stopped at a stage boundary and requeued for the next start. Every wait has a deadline."""

from __future__ import annotations

import time

import pytest
from conftest import IMAGES

from benchmarks.service_server import ServerProcess, alive, wait_gone
from engine.io.glb_export import read_glb_summary
from engine.service.client import ServiceClient

PICTURES = [IMAGES / p for p in ("typical_misc_crate.png", "typical_misc_lantern.png",
                                 "typical_misc_mailbox.png", "typical_vehicle_cart.png")]
READY_S = 600  # a cold JIT cache compiles every kernel once; warm: ~5 s


def _until_running(client: ServiceClient, job_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.status(job_id)["state"] == "in_progress":
            return
        time.sleep(0.01)
    raise TimeoutError(f"job {job_id} never started")


@pytest.fixture
def start(shared_dir, tmp_path):
    """start(**service) -> a started, ready server on the test's data folder (a new port each time)."""
    servers: list[ServerProcess] = []

    def make(**service) -> ServerProcess:
        srv = ServerProcess(tmp_path / "data", tmp_path / "server.log", runner="engine", **service).start()
        servers.append(srv)
        srv.wait_ready(READY_S)
        return srv

    yield make
    for srv in servers:
        srv.close()


def test_sigkill_mid_job_then_restart_finishes_every_accepted_job(start, tmp_path):
    first = start(queue_size=8)
    with ServiceClient(first.url) as client:
        ids = [client.submit(p, faces=800)["id"] for p in PICTURES]
        _until_running(client, ids[0])
        worker = first.worker_pid()
    first.kill()
    assert wait_gone(worker, 5.0), "the worker outlived its killed server"

    second = start(queue_size=8)
    with ServiceClient(second.url) as client:
        finals = {job_id: client.wait(job_id, timeout=120) for job_id in ids}
        assert {v["state"] for v in finals.values()} == {"succeeded"}
        assert finals[ids[0]]["attempts"] == 2                         # the interrupted job ran again
        for job_id in ids:
            glb = read_glb_summary(client.download(job_id, tmp_path / f"{job_id}.glb"))
            assert 0 < glb["faces"] <= 800 and glb["faces"] == finals[job_id]["result"]["faces"]
        assert 'assetgen_jobs{state="succeeded"} 4' in client.metrics().splitlines()   # no duplicate
        worker = second.worker_pid()
    assert second.terminate(60) == 0 and wait_gone(worker, 5.0)


def test_sigterm_requeues_the_running_job_for_the_next_start(start):
    first = start(shutdown_grace_s=0.01)
    with ServiceClient(first.url) as client:
        job = client.submit(PICTURES[0], faces=1000)
        _until_running(client, job["id"])
        worker = first.worker_pid()
    assert first.terminate(60) == 0                                   # a clean exit, not a kill
    assert not alive(worker) and "requeued" in first.log_tail(20)
    second = start()
    with ServiceClient(second.url) as client:
        final = client.wait(job["id"], timeout=120)
        assert final["state"] == "succeeded" and final["attempts"] == 2
