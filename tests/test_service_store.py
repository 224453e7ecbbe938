"""The service's parts without a server: the SQLite job store (queue order, bound, idempotency, cancel,
recovery after a crash, expiry, durability across reopening), the typed settings and their one-line
errors, the card runner's GLB, and the Prometheus text."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import IMAGES

from engine.config import PipelineConfig
from engine.errors import ConfigError
from engine.service.config import JobOptions, ServiceConfig, job_config, job_timeout
from engine.service.jobs_store import JobState, JobStore, QueueFull
from engine.service.metrics import ServiceMetrics


def _add(store: JobStore, job_id: str, key: str | None = None, queue_size: int = 10):
    return store.insert(job_id=job_id, key=key, fingerprint=f"fp-{job_id}", options={"faces": 100},
                        picture="input.png", timeout_s=60.0, queue_size=queue_size)


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def test_store_is_a_fifo_queue_with_a_bound(store):
    for name in ("a", "b", "c"):
        job, created = _add(store, name, queue_size=3)
        assert created and job.state is JobState.PENDING
    with pytest.raises(QueueFull) as full:
        _add(store, "d", queue_size=3)
    assert full.value.pending == 3 and store.get("d") is None
    assert [store.queue_position(store.get(n)) for n in "abc"] == [1, 2, 3]
    first = store.claim_next()
    assert first.id == "a" and first.state is JobState.IN_PROGRESS and first.attempts == 1
    assert store.queue_position(store.get("b")) == 1 and store.pending() == 2
    assert store.finish("a", JobState.SUCCEEDED, result={"faces": 9}).result == {"faces": 9}
    assert store.finish("a", JobState.FAILED, error="x") is None          # only an in-progress job finishes
    assert [store.claim_next().id for _ in range(2)] == ["b", "c"] and store.claim_next() is None


def test_store_mirror_matches_the_file(store, tmp_path):
    """Reads come from the in-memory mirror: after every kind of write it equals the SQLite rows."""
    from engine.service.jobs_store import Job

    def on_file() -> dict:
        conn = sqlite3.connect(tmp_path / "jobs.sqlite3")
        conn.row_factory = sqlite3.Row
        rows = {row["id"]: Job.from_row(row) for row in conn.execute("SELECT * FROM jobs")}
        conn.close()
        return rows

    for name in "abcdef":
        _add(store, name)
    store.claim_next()
    store.finish("a", JobState.FAILED, error="x (fix: y)")
    store.claim_next()
    store.requeue("b")
    store.cancel("c")
    store.claim_next()
    store.cancel("b")
    store.expire_due(ttl_s=-1.0)
    rows = on_file()
    assert {j: store.get(j) for j in rows} == rows
    pending = sorted((job.seq, j) for j, job in rows.items() if job.state is JobState.PENDING)
    assert store.pending() == len(pending) == 3
    assert [store.queue_position(rows[j]) for _, j in pending] == [1, 2, 3]


def test_store_idempotency_key_answers_the_first_job(store):
    job, created = _add(store, "a", key="k1")
    again, created_again = _add(store, "b", key="k1")
    assert created and not created_again and again.id == "a" and store.get("b") is None
    assert store.by_key("k1").id == "a" and store.by_key("k2") is None


def test_store_cancel_pending_at_once_running_by_flag(store):
    _add(store, "a")
    _add(store, "b")
    running = store.claim_next()
    assert store.cancel("b").state is JobState.CANCELED
    flagged = store.cancel(running.id)
    assert flagged.state is JobState.IN_PROGRESS and flagged.cancel_requested
    assert store.claim_next() is None                                    # the canceled job never runs


def test_store_recovers_after_a_crash(tmp_path):
    """A server killed mid-job: reopening the file finds every job; in-progress ones run again (or are
    canceled when a cancel was asked, or fail after max_attempts interruptions)."""
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    for name in ("run", "cancel", "tired", "finished", "queued"):
        _add(store, name)
    for _ in range(4):
        store.claim_next()
    store.cancel("cancel")
    with store._lock:  # a job interrupted twice already
        store._writer.execute("UPDATE jobs SET attempts = 3 WHERE id = 'tired'")
    store.finish("finished", JobState.SUCCEEDED, result={"bytes": 1})
    # no close(): the process "dies"; a second connection opens the same file
    again = JobStore(path)
    assert again.recover(max_attempts=3) == {"requeued": 1, "canceled": 1, "failed": 1}
    states = {j: again.get(j).state for j in ("run", "cancel", "tired", "finished", "queued")}
    assert states == {"run": JobState.PENDING, "cancel": JobState.CANCELED, "tired": JobState.FAILED,
                      "finished": JobState.SUCCEEDED, "queued": JobState.PENDING}
    assert "(fix: " in again.get("tired").error
    assert again.claim_next().id == "run" and again.get("run").attempts == 2   # keeps its place in line
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    again.close()


def test_store_expires_finished_jobs(store):
    _add(store, "a")
    _add(store, "b")
    store.claim_next()
    store.finish("a", JobState.SUCCEEDED)
    assert store.expire_due(ttl_s=60.0) == []
    time.sleep(0.02)
    assert store.expire_due(ttl_s=0.01) == ["a"] and store.get("a").state is JobState.EXPIRED
    assert store.get("b").state is JobState.PENDING and store.expired_ids() == {"a"}
    assert store.counts()[JobState.EXPIRED] == 1


def test_service_settings_reject_bad_values_in_one_line(tmp_path):
    served = PipelineConfig.from_name("flash").for_device()
    cases = [
        (lambda: ServiceConfig(served, tmp_path, queue_size=0), "queue size 0"),
        (lambda: ServiceConfig(served, tmp_path, job_timeout_s=0), "job_timeout_s"),
        (lambda: ServiceConfig(served, tmp_path, port=70000), "port"),
        (lambda: JobOptions(segmenter="onnx:/etc/model.onnx"), "unknown segmenter"),
        (lambda: JobOptions(timeout_s=-1), "timeout_s"),
        (lambda: job_config(served, JobOptions(faces=2)), "face budget 2 is below 4"),
        (lambda: job_config(served, JobOptions(texture_size=100)), "not a power of two"),
        (lambda: job_config(served, JobOptions(preset="default")), "not served here"),
        (lambda: job_config(served, JobOptions(uv="magic")), "unknown UV method"),
        (lambda: job_timeout(ServiceConfig(served, tmp_path, job_timeout_s=5), JobOptions(timeout_s=9)),
         "exceeds this server's limit"),
    ]
    for make, words in cases:
        with pytest.raises(ConfigError, match=words) as err:
            make()
        assert "\n" not in str(err.value) and "(fix: " in str(err.value)
    job = job_config(served, JobOptions(faces=500, texture_size=256, seed=3))
    assert (job.geometry.faces, job.texture.atlas_size, job.runtime.seed) == (500, 256, 3)
    assert job_config(served, JobOptions()) == served


def test_card_runner_writes_a_contract_glb(shared_dir, tmp_path):
    from engine.io.glb_export import read_glb_summary
    from engine.service.runners import CardRunner

    cfg = PipelineConfig.from_name("flash").with_overrides(texture_size=128, faces=300).for_device()
    seen = []
    summary = CardRunner(cfg).run(IMAGES / "typical_misc_crate.png", tmp_path / "card.glb", cfg, None,
                                  lambda i, n, name, s: seen.append((i, n, name, s is None)))
    glb = read_glb_summary(tmp_path / "card.glb")
    assert all(glb[k] for k in ("has_uv", "has_tangents", "has_normal_map", "has_base_color"))
    assert glb["faces"] == summary["faces"] <= 300
    assert summary["bytes"] == (tmp_path / "card.glb").stat().st_size
    assert [s for s in seen if s[3]] == [(1, 3, "preprocess", True), (2, 3, "card mesh", True),
                                         (3, 3, "export glb", True)]
    assert set(summary["stages"]) == {"preprocess", "card mesh", "export glb"}


def test_metrics_text_format():
    m = ServiceMetrics()
    m.stage_seconds.observe(0.03, "texture fuse")
    m.stage_seconds.observe(7.0, "texture fuse")
    m.http_seconds.observe(0.002, "GET", "/v1/jobs/{job_id}")
    m.gpu_memory_seen(None)  # a CPU worker's warm-up: no GPU figure, no series
    assert "assetgen_gpu_memory_bytes{" not in m.render({})
    m.gpu_memory_seen({"allocated": 100, "reserved": 4096, "peak": 2048})  # a CUDA worker's warm-up
    m.job_finished("succeeded", 1.5, {"gpu_memory": {"allocated": 100, "reserved": 4096, "peak": 1024}})
    text = m.render({"pending": 2, "succeeded": 1})
    lines = text.splitlines()
    assert "assetgen_queue_depth 2" in lines and 'assetgen_jobs{state="succeeded"} 1' in lines
    assert 'assetgen_stage_seconds_bucket{stage="texture fuse",le="0.05"} 1' in lines
    assert 'assetgen_stage_seconds_bucket{stage="texture fuse",le="+Inf"} 2' in lines
    assert 'assetgen_stage_seconds_count{stage="texture fuse"} 2' in lines
    assert 'assetgen_gpu_memory_bytes{kind="peak"} 1024' in lines  # the last job's
    assert 'assetgen_gpu_memory_bytes{kind="peak_max"} 2048' in lines  # the highest since start
    assert 'assetgen_gpu_memory_bytes{kind="reserved"} 4096' in lines
    assert "# TYPE assetgen_http_request_seconds histogram" in lines
    assert all(line.startswith("#") or len(line.rsplit(" ", 1)) == 2 for line in lines)


def test_serve_flags_build_the_service_config(tmp_path):
    from engine.cli import _config, build_parser
    from engine.service.config import RunnerKind, service_config

    args = build_parser().parse_args(["serve", "--data-dir", str(tmp_path / "svc"), "--queue-size", "5",
                                      "--preset", "flash", "--faces", "800", "--runner", "card",
                                      "--max-upload-mb", "2", "--result-ttl", "60"])
    cfg = service_config(args, _config(args))
    assert cfg.queue_size == 5 and cfg.runner is RunnerKind.CARD and cfg.max_upload_bytes == 2 * 2**20
    assert cfg.pipeline.geometry.faces == 800 and cfg.result_ttl_s == 60 and cfg.data_dir == Path(
        tmp_path / "svc").resolve()


def test_busy_port_and_shared_data_folder_are_one_line_errors(tmp_path):
    import socket

    from engine.service.server import _listen, _lock_data_dir

    lock = _lock_data_dir(tmp_path / "svc")
    with pytest.raises(ConfigError, match="in use by another assetgen serve"):
        _lock_data_dir(tmp_path / "svc")
    lock.close()
    _lock_data_dir(tmp_path / "svc").close()                           # free again once released
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1") as err:
            _listen("127.0.0.1", taken.getsockname()[1])
        assert "(fix: choose another --port" in str(err.value)
