"""Ray Serve deployments of the engine's shape and texture halves (the paper's MeshGen / TextureGen service
split), and ``RayRunner``, the service worker's runner for ``assetgen serve --backend ray``.

What runs where::

    assetgen serve (FastAPI, SQLite jobs, supervisor)         unchanged: the same HTTP API and job states
      -> worker process: RayRunner, a Ray driver (no engine)   progress, stop requests, the result file
           -> <prefix>-shape   deployment: ShapeReplica x N     HalfEngine(shape), built + warmed once
           -> <prefix>-texture deployment: TextureReplica x M   HalfEngine(texture), built + warmed once

A job is one call to each deployment, shape then texture: the picture's bytes go to a shape replica, its
``Handoff`` (prepared picture, unwrapped mesh, normal map; the dense mesh stays behind) goes through the
driver to a texture replica, which answers the GLB's bytes. Each call streams its stages' start and end
(``("stage", index, count, name, seconds_or_None)``) and ends with ``("done", value)`` or
``("failed", user_error, type, message)``. The driver hands every stage event to the worker's progress
callback, which raises at a stage boundary once a stop is requested (cancel, timeout, shutdown); the driver
then cancels the call, and the replica stops its graph at the graph's next stage boundary.

Replicas, GPUs and CPUs per replica come from ``RayConfig``. With no cluster address the worker starts a
local Ray instance (its HTTP proxy off: the FastAPI app is the front end) and stops it on close. Ray is an
optional dependency (``pip install -e '.[ray]'``), imported only here, only when used.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from engine.config import PipelineConfig
from engine.errors import AssetGenError, MissingDependencyError
from engine.io.atomic import atomic_write_bytes
from engine.service.engine_halves import Half, HalfEngine, HalfStopped
from engine.service.ray_config import HALVES, RayConfig

log = logging.getLogger("assetgen.ray")
DESCRIBE_TIMEOUT_S = 120.0
CONSTRUCTOR_RETRIES = 2  # a replica whose engine cannot be built fails the start instead of retrying 20 times


def _import_ray():
    try:
        import ray
        from ray import serve
    except ImportError:
        raise MissingDependencyError("ray", "ray") from None
    return ray, serve


# ---------------------------------------------------------------------------------------- replica side
class _HalfReplica:
    """A Serve replica owning one ``HalfEngine``: built and warmed in the constructor (the replica is not
    routed requests before), serving ``run`` (streamed) and ``describe``."""

    HALF: Half

    def __init__(self, config: PipelineConfig) -> None:
        self.engine = HalfEngine(self.HALF, config)
        self.engine.warmup()
        self.identity = _identity()
        log.info("replica ready: %s", self.engine.info())

    def describe(self, config: PipelineConfig | None = None) -> dict:
        """This replica (pid, node, networks, build and warm-up seconds), its stages for ``config``."""
        return {**self.engine.info(), **self.identity,
                "stages": self.engine.stage_names(config or self.engine.config)}

    async def _stream(self, work: Callable):
        """Run ``work(progress)`` on a thread; yield its stage events, then its outcome. Cancelled or closed
        early (the caller stopped the job), the run ends at its next stage boundary."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def post(event: tuple) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the replica's loop is closed: it is shutting down
                pass

        def progress(index: int, count: int, stage: str, seconds: float | None) -> None:
            post(("stage", index, count, stage, seconds))
            if stop.is_set():
                raise HalfStopped(stage)

        def call() -> None:
            try:
                value = work(progress)
                value.replica = self.identity
                post(("done", value))
            except HalfStopped:
                post(("stopped",))
            except AssetGenError as err:
                post(("failed", True, type(err).__name__, str(err)))
            except Exception as err:  # noqa: BLE001 - one job's bug must not take the replica down
                log.exception("%s half raised", self.HALF.value)
                first = str(err).splitlines()[0] if str(err) else ""
                post(("failed", False, type(err).__name__, first))

        loop.run_in_executor(None, call)
        try:
            while True:
                event = await events.get()
                if event[0] == "stopped":
                    return
                yield event
                if event[0] != "stage":
                    return
        finally:
            stop.set()

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


class ShapeReplica(_HalfReplica):
    HALF = Half.SHAPE

    async def run(self, config: PipelineConfig, picture: bytes, suffix: str, segmenter: str | None):
        """Picture bytes -> stage events, then ("done", Handoff)."""
        work = lambda progress: self.engine.shape_from_bytes(  # noqa: E731 - the thread's call
            config, picture, suffix, segmenter, progress)
        async for event in self._stream(work):
            yield event


class TextureReplica(_HalfReplica):
    HALF = Half.TEXTURE

    async def run(self, config: PipelineConfig, handoff):
        """Handoff -> stage events, then ("done", TextureOutcome) carrying the GLB's bytes."""
        async for event in self._stream(lambda progress: self.engine.texture(config, handoff, progress)):
            yield event


def _identity() -> dict:
    """Where this replica runs: process, Ray node and Serve replica ids."""
    ray, serve = _import_ray()
    identity = {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()[:16]}
    try:
        identity["replica"] = serve.get_replica_context().replica_id.unique_id
    except (AttributeError, RuntimeError):  # outside a Serve replica (tests call the class directly)
        pass
    return identity


# ----------------------------------------------------------------------------------------- driver side
def deploy(config: PipelineConfig, ray_config: RayConfig) -> dict:
    """Deploy (or update) both halves as Serve applications; waits until every replica is built and warm.
    Returns {"shape": handle, "texture": handle}."""
    _, serve = _import_ray()
    device = config.runtime.device
    targets = []
    for half, cls in zip(HALVES, (ShapeReplica, TextureReplica)):
        deployment = serve.deployment(
            cls, name=half, num_replicas=getattr(ray_config, f"{half}_replicas"),
            ray_actor_options=ray_config.actor_options(half, device),
            max_ongoing_requests=ray_config.max_ongoing_requests,
            max_constructor_retry_count=CONSTRUCTOR_RETRIES)
        targets.append(serve.RunTarget(deployment.bind(config), name=f"{ray_config.app_prefix}-{half}",
                                       route_prefix=None))
    return dict(zip(HALVES, serve.run_many(targets)))


class RayRunner:
    """The service worker's runner for ``--backend ray`` (module docstring): the ``Runner`` protocol of
    engine/service/runners.py over the two deployments."""

    MAX_CONFIGS = 16  # stage lists kept for job configs

    def __init__(self, config: PipelineConfig, ray_config: RayConfig) -> None:
        ray, serve = _import_ray()
        self.config, self.ray_config = config, ray_config
        self.local = ray_config.address is None
        previous = signal.getsignal(signal.SIGTERM)
        ray.init(address="local" if self.local else ray_config.address, num_cpus=ray_config.num_cpus,
                 include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)  # ray.init installs its own; the worker ignores SIGTERM
        # no Ray HTTP proxy: the FastAPI app is the front end (a Serve instance already running keeps its own)
        serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
        self.handles = deploy(config, ray_config)
        self._stages: OrderedDict[PipelineConfig, tuple[list[str], list[str]]] = OrderedDict()

    # ------------------------------------------------------------------------------------- lifecycle
    def warmup(self) -> float:
        """One synthetic request through both deployments (the replicas warmed themselves when built)."""
        import tempfile

        from engine.runtime.engine import _synthetic_picture

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="assetgen-ray-warmup-") as tmp:
            picture = Path(tmp) / "warmup.png"
            _synthetic_picture(picture)
            self.run(picture, Path(tmp) / "warmup.glb", self.config, None, lambda *_: None)
        return time.perf_counter() - t0

    def info(self) -> dict:
        """For /readyz: the backend and, per half, its replicas and one replica's description."""
        out: dict = {"backend": "ray", "ray_address": self.ray_config.address or "local"}
        for half in HALVES:
            described = self.handles[half].describe.remote().result(timeout_s=DESCRIBE_TIMEOUT_S)
            described.pop("stages", None)
            out[half] = {"replicas": getattr(self.ray_config, f"{half}_replicas"),
                         "gpus_per_replica": self.ray_config.gpus(half, self.config.runtime.device),
                         **described}
        return out

    def close(self) -> None:
        """A local Ray instance is stopped (replicas first, so they close their engines); a cluster's
        deployments keep running for the next start."""
        ray, serve = _import_ray()
        try:
            if self.local:
                serve.shutdown()
        finally:
            ray.shutdown()

    # ------------------------------------------------------------------------------------------- jobs
    def run(self, picture: Path, output: Path, config: PipelineConfig, segmenter: str | None,
            progress: Callable) -> dict:
        """Picture -> GLB at ``output`` through the shape, then the texture deployment; returns the summary
        (as EngineRunner's, plus where each half ran)."""
        from engine.runtime.engine import check_output

        out = check_output(output)
        t0 = time.perf_counter()
        shape_names, texture_names = self._stage_names(config)
        count = len(shape_names) + len(texture_names)
        call = self.handles["shape"].options(stream=True).run.remote(
            config, Path(picture).read_bytes(), Path(picture).suffix, segmenter)
        handoff = _follow(call, "shape", 0, count, progress)
        call = self.handles["texture"].options(stream=True).run.remote(config, handoff)
        outcome = _follow(call, "texture", len(shape_names), count, progress)
        atomic_write_bytes(out, outcome.glb)
        return {"faces": outcome.faces, "vertices": outcome.vertices, "bytes": out.stat().st_size,
                "stages": {**handoff.stages, **outcome.stages}, "wall_s": round(time.perf_counter() - t0, 6),
                "finished": time.time(), "sources": outcome.sources, "backend": "ray",
                "replicas": {"shape": handoff.replica, "texture": outcome.replica}}

    def _stage_names(self, config: PipelineConfig) -> tuple[list[str], list[str]]:
        """Both halves' stage names for ``config`` (asked once per config: the progress count)."""
        names = self._stages.pop(config, None)
        if names is None:
            asked = [self.handles[half].describe.remote(config) for half in HALVES]
            names = tuple(r.result(timeout_s=DESCRIBE_TIMEOUT_S)["stages"] for r in asked)
        self._stages[config] = names
        while len(self._stages) > self.MAX_CONFIGS:
            self._stages.popitem(last=False)
        return names


def _follow(call, half: str, offset: int, count: int, progress: Callable):
    """Hand a streamed call's stage events to ``progress`` (renumbered within the whole job) and return its
    value; if ``progress`` raises (a stop request) or the call fails, the call is cancelled."""
    ray, _ = _import_ray()
    try:
        for event in call:
            if event[0] == "stage":
                _, index, _, name, seconds = event
                progress(offset + index, count, name, seconds)
            elif event[0] == "done":
                return event[1]
            else:
                _, user_error, kind, message = event
                if user_error:
                    raise AssetGenError(message)
                raise RuntimeError(f"{kind} in the {half} replica: {message}")
    except ray.exceptions.RayActorError:
        raise RuntimeError(f"the {half} replica died while running this job (Serve starts another)") from None
    except BaseException:
        call.cancel()
        raise
    raise RuntimeError(f"the {half} replica ended the call without a result")
