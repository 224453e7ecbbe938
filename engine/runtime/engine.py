"""The resident engine: built once from a ``PipelineConfig``, it serves many requests.

Lifecycle (TensorRT demo's load / allocate / warm up / infer / unload, nano-vllm's ModelRunner):

    with Engine(PipelineConfig.from_name("flash").with_overrides(device="cuda").for_device()) as engine:
        engine.warmup()                                   # optional: compiles every kernel, captures graphs
        result = engine.generate("crate.png", "crate.glb")
        for item in engine.generate_many([("a.png", "a.glb"), ("b.png", "b.glb")]):
            ...

On construction the engine points the JIT caches (numba, Triton, Inductor) at one folder (so a second
process starts warm), picks every stage's backend once (``engine.runtime.backends``), loads every
configured network once (``engine.runtime.models.ModelStore``), starts the UV worker pool, and builds the
stage graphs once. Requests then only run graphs: ``generate`` overlaps the independent stages of one
request, ``generate_many`` also pipelines requests (at most ``RuntimeConfig.max_in_flight`` at once) and
reports each one's outcome, a failed picture failing alone. ``overlap=False`` runs the serial baseline.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.config import Device, PipelineConfig, UvMethod
from engine.errors import ConfigError
from engine.pipeline import (
    Resources,
    RunResult,
    generate_graph,
    generate_result,
    process_graph,
    process_result,
)
from engine.runtime.backends import select_backends
from engine.runtime.scheduler import Progress, Scheduler
from profiling.stage_timer import StageTimer

PathLike = str | os.PathLike


def check_output(path: PathLike) -> Path:
    """The output GLB path, checked before any work: a .glb name, not a folder, in a writable folder."""
    out = Path(path)
    if out.suffix.lower() != ".glb":
        raise ConfigError(f"output '{out}' does not end in .glb", "name the output file something.glb")
    if out.is_dir():
        raise ConfigError(f"output '{out}' is an existing folder", "give a file name ending in .glb")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"output folder '{parent}' is a file", "choose an -o inside an existing folder")
    if not parent.exists():
        raise ConfigError(f"output folder '{parent}' does not exist", "create it first or choose another -o")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder '{parent}' is not writable", "choose a folder you can write to")
    return out


class SerialUnwrapper:
    """UV unwrapping with serial xatlas in-process (``RuntimeConfig.uv_workers`` 1: the CPU path)."""

    def unwrap(self, mesh, resolution: int):
        from engine.geometry.uv_unwrap import unwrap_uv

        return unwrap_uv(mesh, resolution=resolution)

    def warmup(self) -> float:
        return 0.0

    def close(self) -> None:
        return None


class ChartsUnwrapper:
    """UV unwrapping by projection charts and one bitmap packing (``GeometryConfig.uv_method`` charts;
    engine/geometry/uv_fast.py), in-process; the packing scale search tries ``workers`` candidate scales
    at once in threads (the kernels release the GIL; the result does not depend on ``workers``)."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def unwrap(self, mesh, resolution: int):
        from engine.geometry.uv_fast import unwrap_uv_fast

        return unwrap_uv_fast(mesh, resolution=resolution, workers=self.workers)

    def warmup(self) -> float:
        """Compile (or load from the JIT cache) the charting and packing kernels on a small closed mesh."""
        from engine.geometry.mesh import TriMesh
        from engine.geometry.uv_fast import unwrap_uv_fast

        t0 = time.perf_counter()
        verts = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float32)
        faces = np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]], np.int32)
        unwrap_uv_fast(TriMesh(verts, faces), resolution=64)
        return time.perf_counter() - t0

    def close(self) -> None:
        return None


def make_unwrapper(method: UvMethod, workers: int):
    """The engine's UV unwrapper: projection charts (``UvMethod.CHARTS``, ``workers`` packing threads),
    or xatlas: serial for one
    worker, else partitioned xatlas charts in ``workers`` processes with one bitmap packing pass
    (engine/geometry/uv_parallel.py), its pool kept across requests."""
    if method is UvMethod.CHARTS:
        return ChartsUnwrapper(workers)
    if workers <= 1:
        return SerialUnwrapper()
    from engine.geometry.uv_parallel import UvUnwrapper

    return UvUnwrapper(workers=workers)


@dataclass
class BatchItem:
    """One picture of ``generate_many``: its index, source and output, and a result or the error."""

    index: int
    picture: Path
    output: Path
    result: RunResult | None
    error: BaseException | None = None


class Engine:
    """See the module docstring. ``config`` should already be ``for_device()``-scaled."""

    def __init__(self, config: PipelineConfig) -> None:
        from triton_kernels.jit_cache import configure_jit_caches, default_cache_dir

        t0 = time.perf_counter()
        self.config = config
        runtime = config.runtime
        self.cache_dirs = configure_jit_caches(Path(runtime.cache_dir) if runtime.cache_dir
                                               else default_cache_dir())
        self.backends = select_backends(runtime.device)
        from engine.runtime.models import ModelStore

        self.models = ModelStore(config)
        self.unwrapper = make_unwrapper(config.geometry.uv_method, runtime.uv_workers)
        self.resources = Resources(config, self.backends, self.unwrapper, self.models.shape,
                                   self.models.texture)
        self._generate = generate_graph(self.resources)
        self._process = process_graph(self.resources)
        self.scheduler = Scheduler(cuda=runtime.device is Device.CUDA, cpu_workers=runtime.cpu_lane_workers)
        self.requests = 0
        self.seconds_build = time.perf_counter() - t0
        self.seconds_warmup: float | None = None

    # ------------------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the lanes and the UV workers; the networks are released with the engine."""
        self.scheduler.close()
        self.unwrapper.close()

    def interrupt(self) -> bool:
        """A signal arrived (Ctrl-C, SIGTERM): start no further stage and wait only for output writes in
        progress, so each output is complete or absent. Returns False if a write did not end in time."""
        return self.scheduler.interrupt()

    def warmup(self, progress: Progress | None = None) -> float:
        """Run one request on a synthetic picture so every kernel is compiled (or loaded from the JIT
        cache) and every CUDA graph captured before the first real request. Returns its seconds.
        ``progress``: as ``generate``'s, for the warm-up request."""
        t0 = time.perf_counter()
        self.unwrapper.warmup()                 # worker processes started, xatlas + numba loaded in each
        with tempfile.TemporaryDirectory(prefix="assetgen-warmup-") as tmp:
            picture = Path(tmp) / "warmup.png"
            _synthetic_picture(picture)
            self.generate(picture, Path(tmp) / "warmup.glb", progress=progress)
        self.seconds_warmup = time.perf_counter() - t0
        return self.seconds_warmup

    def _timer(self, profile: bool = False) -> StageTimer:
        return StageTimer(device=self.config.runtime.device.value, substeps=profile)

    # ------------------------------------------------------------------------------------------- requests
    def generate(self, picture: PathLike, output: PathLike, *, segmenter: str | None = None,
                 progress: Progress | None = None, overlap: bool = True, profile: bool = False) -> RunResult:
        """picture (PNG/JPEG/WebP file) -> GLB at ``output``. ``overlap=False``: the serial baseline.
        ``profile``: time each stage's parts too (synchronising: a serial profile, not a latency figure;
        ``profiling.stage_timer``)."""
        out = check_output(output)
        values = {"image_path": Path(picture), "segmenter": segmenter, "output": out}
        timer = self._timer(profile)
        if overlap:
            env = self.scheduler.run(self._generate, values, timer, progress)
        else:
            env = self._generate.run(values, timer, progress)
        self.requests += 1
        return generate_result(env, out, timer, self.config)

    def generate_many(self, jobs: Iterable[tuple[PathLike, PathLike]], *, segmenter: str | None = None,
                      progress: Callable[[int], Progress | None] | None = None,
                      max_in_flight: int | None = None) -> Iterator[BatchItem]:
        """Pictures -> GLBs, pipelined; yields a ``BatchItem`` per picture as it finishes (in completion
        order). A picture that fails (bad file, unwritable output, ...) carries its error; the rest go on."""
        jobs = [(Path(p), Path(o)) for p, o in jobs]
        checked: dict[int, BaseException] = {}
        for i, (_, out) in enumerate(jobs):
            try:
                check_output(out)
            except ConfigError as err:
                checked[i] = err
        for i in sorted(checked):
            yield BatchItem(i, jobs[i][0], jobs[i][1], None, checked[i])
        todo = [i for i in range(len(jobs)) if i not in checked]
        requests = ({"image_path": jobs[i][0], "segmenter": segmenter, "output": jobs[i][1]} for i in todo)
        pipelined = self.scheduler.run_many(
            self._generate, requests, self._timer, max_in_flight or self.config.runtime.max_in_flight,
            (lambda k: progress(todo[k])) if progress else None)
        for outcome in pipelined:
            i = todo[outcome.index]
            self.requests += 1
            result = None if outcome.error else generate_result(outcome.env, jobs[i][1], outcome.timer,
                                                                self.config)
            yield BatchItem(i, jobs[i][0], jobs[i][1], result, outcome.error)

    def process(self, mesh: PathLike, output: PathLike, *, progress: Progress | None = None,
                overlap: bool = True) -> RunResult:
        """Mesh file (GLB/glTF/OBJ/PLY/OFF) -> GLB with the geometry post-processing and texture transfer."""
        out = check_output(output)
        values = {"mesh_path": Path(mesh), "output": out}
        timer = self._timer()
        env = (self.scheduler.run(self._process, values, timer, progress) if overlap
               else self._process.run(values, timer, progress))
        self.requests += 1
        return process_result(env, Path(mesh), out, timer, self.config)


def _synthetic_picture(path: Path, size: int = 256) -> None:
    """A shaded rounded box on a transparent background (RGBA PNG): a warm-up input with an informative
    alpha channel, so no segmenter model is needed."""
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) * 2.0 - 1.0
    inside = (np.abs(xx) ** 4 + np.abs(yy * 1.3) ** 4) < 0.5
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., 0] = (120 + 100 * (xx + 1) / 2).astype(np.uint8)
    rgba[..., 1] = (80 + 120 * (yy + 1) / 2).astype(np.uint8)
    rgba[..., 2] = 140
    rgba[..., 3] = np.where(inside, 255, 0)
    Image.fromarray(rgba, "RGBA").save(path)
