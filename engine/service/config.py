"""The service's typed settings: ``ServiceConfig`` (one per server) and ``JobOptions`` (one per job).

``ServiceConfig`` holds the HTTP, queue and storage limits and the ``PipelineConfig`` the worker's resident
engine is built from (already ``for_device()``-scaled by the CLI). ``JobOptions`` are the per-job knobs a
client may turn in ``POST /v1/jobs``; ``job_config`` applies them to the served config through
``PipelineConfig.with_overrides`` so a bad value answers with the CLI's own one-line message.
Both are frozen and validated in ``__post_init__``; a bad value raises ``ConfigError``.
"""

from __future__ import annotations

import argparse
import enum
from dataclasses import dataclass
from pathlib import Path

from engine.config import PipelineConfig
from engine.errors import ConfigError
from engine.service.ray_config import RayConfig, add_ray_arguments, ray_config


class RunnerKind(enum.Enum):
    """What the worker process runs per job (engine/service/runners.py)."""

    ENGINE = "engine"  # the resident Engine: picture -> game-ready GLB (production)
    CARD = "card"  # the picture's cut-out on a textured quad (decode, mask, crop, GLB): load tests, previews


class Backend(enum.Enum):
    """Where the engine runs (``--backend``)."""

    LOCAL = "local"  # one spawned worker process owns the resident engine (engine/service/worker.py)
    RAY = "ray"  # shape and texture halves as Ray Serve deployments (engine/service/ray_deployments.py)


SEGMENTERS = ("alpha", "grabcut")  # ONNX model paths are a server-side choice, not a client's


def _require(cond: bool, problem: str, fix: str) -> None:
    if not cond:
        raise ConfigError(problem, fix)


@dataclass(frozen=True)
class ServiceConfig:
    """One server: where it listens, where it keeps jobs, its limits and the engine it serves."""

    pipeline: PipelineConfig
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    runner: RunnerKind = RunnerKind.ENGINE
    backend: Backend = Backend.LOCAL
    ray: RayConfig = RayConfig()  # --backend ray: address, replicas, GPUs per replica
    queue_size: int = 64  # pending jobs admitted; one more answers 429
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 4096 * 4096  # decoded picture size (checked from the header before decoding)
    job_timeout_s: float = 600.0  # a job running longer is stopped (at a stage boundary, else killed)
    kill_grace_s: float = 10.0  # after a stop request, how long a stage may run on before a kill
    result_ttl_s: float = 24 * 3600.0  # finished jobs' files are deleted this long after they finish
    shutdown_grace_s: float = 30.0  # SIGTERM: how long the running job may take to finish before requeueing
    worker_start_timeout_s: float = 900.0  # engine build + warm-up (a cold JIT cache compiles every kernel)
    max_attempts: int = 3  # a job interrupted by this many server restarts fails instead of running again
    worker_nice: int = 10  # the worker's CPU priority below the server's: the API answers on a busy CPU
    log_level: str = "info"

    def __post_init__(self) -> None:
        _require(0 <= self.port <= 65535, f"port {self.port} out of range", "use --port in [0, 65535]")
        _require(self.queue_size >= 1, f"queue size {self.queue_size} is below 1",
                 "use --queue-size 1 or more")
        _require(self.max_upload_bytes >= 1024, f"upload limit {self.max_upload_bytes} bytes is too small",
                 "use --max-upload-mb 1 or more")
        _require(self.max_pixels >= 64 * 64, f"pixel limit {self.max_pixels} is too small",
                 "use --max-pixels 4096 or more")
        for name in ("job_timeout_s", "kill_grace_s", "result_ttl_s", "shutdown_grace_s",
                     "worker_start_timeout_s"):
            value = getattr(self, name)
            _require(value > 0, f"{name} = {value} must be > 0", f"use a positive --{_flag(name)}")
        _require(self.max_attempts >= 1, f"max_attempts = {self.max_attempts} must be >= 1", "use 1 or more")
        _require(0 <= self.worker_nice <= 19, f"worker nice {self.worker_nice} out of range",
                 "use --worker-nice in [0, 19]")
        _require(self.log_level in ("debug", "info", "warning", "error"),
                 f"unknown log level '{self.log_level}'", "use --log-level debug, info, warning or error")
        if self.backend is Backend.RAY:
            _require(self.runner is RunnerKind.ENGINE, f"--runner {self.runner.value} with --backend ray",
                     "use --runner engine with --backend ray (the card runner runs in the local worker)")
            self.ray.check_device(self.pipeline.runtime.device)

    @property
    def database(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"


def _flag(name: str) -> str:
    return name.removesuffix("_s").replace("_", "-")


@dataclass(frozen=True)
class JobOptions:
    """Per-job knobs of ``POST /v1/jobs`` (None: the served config's value)."""

    preset: str | None = None
    faces: int | None = None
    texture_size: int | None = None
    normal_map_size: int | None = None
    seed: int | None = None
    placement: str | None = None
    uv: str | None = None
    segmenter: str | None = None
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        _require(self.segmenter is None or self.segmenter in SEGMENTERS,
                 f"unknown segmenter '{self.segmenter}'",
                 "use segmenter alpha or grabcut, or leave it out (alpha when the picture has one)")
        _require(self.timeout_s is None or self.timeout_s > 0, f"timeout_s = {self.timeout_s} must be > 0",
                 "give a positive timeout_s or leave it out")
        _require(self.seed is None or 0 <= self.seed < 2**63, f"seed {self.seed} out of range",
                 "use a seed in [0, 2^63)")

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def job_config(served: PipelineConfig, options: JobOptions) -> PipelineConfig:
    """The config one job runs with: the served config with the job's overrides (validated)."""
    if options.preset is not None and options.preset != served.preset.value:
        raise ConfigError(f"preset '{options.preset}' is not served here (this server runs "
                          f"'{served.preset.value}')",
                          f"submit preset {served.preset.value} or leave it out, or start a server with "
                          f"assetgen serve --preset {options.preset}")
    return served.with_overrides(faces=options.faces, texture_size=options.texture_size,
                                 normal_map_size=options.normal_map_size, seed=options.seed,
                                 placement=options.placement, uv_method=options.uv)


def job_timeout(service: ServiceConfig, options: JobOptions) -> float:
    """A job's time limit: its own ``timeout_s`` when given (at most the server's), else the server's."""
    if options.timeout_s is not None and options.timeout_s > service.job_timeout_s:
        raise ConfigError(f"timeout_s {options.timeout_s:g} exceeds this server's limit "
                          f"{service.job_timeout_s:g} s", f"use timeout_s <= {service.job_timeout_s:g}")
    return options.timeout_s or service.job_timeout_s


# ---------------------------------------------------------------------------------------- command line
def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """``assetgen serve``'s flags: the service's own, then the generate flags that shape the engine."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", default="assetgen-service", metavar="DIR",
                   help="jobs database (SQLite), uploads and results; created if missing")
    p.add_argument("--queue-size", type=int, default=64, help="pending jobs admitted; more answer 429")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload (MiB)")
    p.add_argument("--max-pixels", type=int, default=4096 * 4096, help="largest accepted picture (pixels)")
    p.add_argument("--job-timeout", type=float, default=600.0, help="seconds a job may run")
    p.add_argument("--result-ttl", type=float, default=24 * 3600.0,
                   help="seconds a finished job's files are kept (then the job is 'expired')")
    p.add_argument("--shutdown-grace", type=float, default=30.0,
                   help="SIGTERM/SIGINT: seconds the running job may take to finish before it is requeued")
    p.add_argument("--runner", default="engine", choices=[k.value for k in RunnerKind],
                   help="engine: picture -> game-ready GLB; card: the cut-out on a flat card (load tests)")
    add_ray_arguments(p)
    p.add_argument("--worker-nice", type=int, default=10,
                   help="the engine worker's CPU niceness above the server's (0: same priority)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--preset", default="default", choices=["default", "flash"])
    p.add_argument("--faces", type=int, default=None, help="default polygon budget (jobs may override)")
    p.add_argument("--texture-size", type=int, default=None, help="default base-colour atlas edge")
    p.add_argument("--normal-map-size", type=int, default=None, help="default normal map edge")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=None, help="default sampler seed")
    p.add_argument("--placement", default=None, choices=["on_edge", "bounded_optimal"])
    p.add_argument("--uv", default=None, choices=["charts", "xatlas"])
    p.add_argument("--random-networks", default=None, choices=["tiny", "paper"],
                   help="every network with random weights at this size (plumbing and latency checks)")
    p.add_argument("--shape-model", default=None, metavar="PATH", help="Hunyuan3D-2 snapshot (as generate)")
    p.add_argument("--weights", default=None, metavar="DIR", help="AssetGen checkpoints (as generate)")
    p.add_argument("--precision", default=None, choices=["auto", "bf16", "fp8", "int8"])
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="JIT caches (numba, Triton, Inductor); default $XDG_CACHE_HOME/assetgen")


def service_config(args: argparse.Namespace, pipeline: PipelineConfig) -> ServiceConfig:
    """The ``ServiceConfig`` of parsed ``assetgen serve`` flags around the engine's config."""
    return ServiceConfig(
        pipeline=pipeline, data_dir=Path(args.data_dir).expanduser().resolve(), host=args.host,
        port=args.port, runner=RunnerKind(args.runner), backend=Backend(args.backend), ray=ray_config(args),
        queue_size=args.queue_size,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels,
        job_timeout_s=args.job_timeout, result_ttl_s=args.result_ttl, shutdown_grace_s=args.shutdown_grace,
        worker_nice=args.worker_nice, log_level=args.log_level)
