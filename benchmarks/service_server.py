"""The service tests' and benchmarks' server harness: ``assetgen serve`` as a child process on loopback.

``ServerProcess`` starts ``python -m benchmarks.service_server SPEC_JSON`` (a ServiceConfig's fields, with
``ray`` as a dict of RayConfig fields, and pipeline overrides): the engine at its smallest real CPU
settings (``tiny_pipeline``: small grid, few visibility views, which the CLI does not expose), or the card
runner; or, with ``engine`` (preset, networks, precision), a preset's full CUDA config as ``assetgen
serve --device cuda`` builds it (the paper-size engine of benchmarks/service_gpu.py). Helpers: process
liveness and resident memory from /proc, the shared test pictures at load-test size, the server's job
count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import REPO
from engine.service.client import ServiceClient

SHARED_IMAGES = Path(os.environ.get("ASSETGEN_SHARED", REPO.parent / "shared")) / "images"


def tiny_pipeline(preset: str = "flash", view_resolution: int | None = None, **overrides):
    """The engine's smallest real CPU settings (as tests/test_engine.py's): weight-free, 48^3 grid,
    16 visibility views at 64 px, 1000 faces, 128^2 textures. ``view_resolution``: TextureGen's views
    (with ``random_networks``; tests use 64 px)."""
    from engine.config import PipelineConfig

    values = {"faces": 1000, "texture_size": 128, "normal_map_size": 128, **overrides}
    cfg = PipelineConfig.from_name(preset).with_overrides(**values)
    cfg = replace(cfg, shape=replace(cfg.shape, grid_resolution=48),
                  geometry=replace(cfg.geometry, visibility_views=16, visibility_resolution=64))
    if view_resolution is not None:
        cfg = replace(cfg, texture=replace(cfg.texture, view_resolution=view_resolution))
    return cfg.for_device()


def _serve_spec(spec: dict) -> int:
    from engine.service.config import Backend, RunnerKind, ServiceConfig
    from engine.service.ray_config import RayConfig
    from engine.service.server import serve

    service = dict(spec["service"])
    service["data_dir"] = Path(service["data_dir"])
    service["runner"] = RunnerKind(service.get("runner", "card"))
    service["backend"] = Backend(service.get("backend", "local"))
    service["ray"] = RayConfig(**service.get("ray", {}))
    if spec.get("engine"):
        from benchmarks.end_to_end_gpu import engine_config

        pipeline = engine_config(**spec["engine"])
    else:
        pipeline = tiny_pipeline(**spec.get("pipeline", {}))
    return serve(ServiceConfig(pipeline=pipeline, **service))


class ServerProcess:
    """``assetgen serve`` (tiny pipeline) as a child process on a loopback port; its log in ``log_path``.
    ``service``: ServiceConfig fields (runner, queue_size, result_ttl_s, ...); ``pipeline``: overrides of
    the tiny pipeline; ``engine``: instead, ``end_to_end_gpu.engine_config``'s arguments (preset,
    networks, precision). The port is the kernel's choice (0) unless given: the server's "serving" log
    line names it."""

    def __init__(self, data_dir: Path, log_path: Path, *, pipeline: dict | None = None,
                 engine: dict | None = None, **service) -> None:
        self.data_dir, self.log_path = Path(data_dir), Path(log_path)
        self.port = service.pop("port", 0)
        self.spec = {"service": {"data_dir": str(self.data_dir), "port": self.port, **service},
                     "pipeline": pipeline or {}, "engine": engine}
        self.proc: subprocess.Popen | None = None
        self.worker_pids: set[int] = set()
        self._log_start = 0

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the server has not said its port yet: call wait_ready() first")
        return f"http://127.0.0.1:{self.port}"

    def _find_port(self) -> None:
        """The port from this start's "serving" log line (the log may hold earlier starts' lines)."""
        with self.log_path.open("rb") as fh:
            fh.seek(self._log_start)
            for line in fh:
                if b'"msg": "serving"' in line:
                    self.port = int(json.loads(line)["url"].rsplit(":", 1)[1])
                    return

    def start(self) -> ServerProcess:
        self.port = self.spec["service"]["port"]
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.service_server",
                                      json.dumps(self.spec)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def wait_ready(self, timeout: float) -> dict:
        """Poll /readyz until 200; returns /healthz. Raises with the log's tail on timeout or exit."""
        deadline = time.monotonic() + timeout
        while not self.port and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log_tail()}")
            self._find_port()
            time.sleep(0.05)
        with ServiceClient(self.url, timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log_tail()}")
                try:
                    if client.ready():
                        health = client.health()
                        self.worker_pids.add(health["worker_pid"])
                        return health
                except OSError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout:g} s:\n{self.log_tail()}")

    def worker_pid(self) -> int:
        with ServiceClient(self.url, timeout=5.0) as client:
            pid = client.health()["worker_pid"]
        self.worker_pids.add(pid)
        return pid

    def kill(self) -> None:
        """SIGKILL: no clean-up at all (the restart test's crash)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float) -> int:
        """SIGTERM and wait for a clean exit; returns the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        """Stop the server if it still runs, and make sure no worker outlives it."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(30.0)
            except subprocess.TimeoutExpired:
                self.kill()
        for pid in self.worker_pids:
            wait_gone(pid, 5.0)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def load_pictures(folder: Path, size: int = 256, count: int = 4) -> list[Path]:
    """``count`` shared pictures downscaled to ``size`` px (RGBA kept), written to ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted(SHARED_IMAGES.glob("typical_*.png"))[:count]:
        path = folder / src.name
        Image.open(src).resize((size, size), Image.LANCZOS).save(path)
        out.append(path)
    return out


def server_job_count(client: ServiceClient) -> int:
    """Jobs in the server's table, all states (from /metrics)."""
    total = 0
    for line in client.metrics().splitlines():
        if line.startswith("assetgen_jobs{"):
            total += int(float(line.split()[-1]))
    return total


if __name__ == "__main__":
    sys.exit(_serve_spec(json.loads(sys.argv[1])))
