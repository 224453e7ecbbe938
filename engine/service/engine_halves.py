"""The resident engine cut in two (the paper's MeshGen / TextureGen service split), each half a resource set
of its own, built once and warmed once: what one Ray Serve replica owns (engine/service/ray_deployments.py).
Nothing here imports Ray, so the halves are tested without it.

    shape half    picture -> dense mesh -> simplified, hidden faces removed, unwrapped + normal map
                  (``engine.pipeline.shape_half_graph``): backends, the shape networks, the UV unwrapper
    texture half  texture plan / views / fuse -> GLB (``texture_half_graph``): backends, the texture networks

A half runs the same declared stages as ``Engine.generate`` (the pipeline splits its graph; no stage code
is duplicated), on its own scheduler; a job whose options change the config runs a graph built for that
config over the same resident resources, as ``EngineRunner`` does. Between the halves travels a
``Handoff`` (the prepared picture, the visible and the unwrapped mesh, the normal map: plain numpy,
pickled by Ray); the dense mesh stays in the shape half. The texture half returns the GLB's bytes, written by the caller.

Lifecycle: ``HalfEngine(half, config)`` (load), ``warmup()`` (one synthetic request), ``shape(...)`` /
``texture(...)`` per request, ``close()``.
"""

from __future__ import annotations

import enum
import os
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.config import Device, PipelineConfig
from engine.pipeline import (
    SHAPE_HALF_HANDOFF,
    Resources,
    generate_sources,
    shape_half_graph,
    texture_half_graph,
)
from engine.runtime.models import ModelStore
from engine.runtime.scheduler import Progress, StageGraph
from profiling.stage_timer import StageTimer


class Half(enum.Enum):
    SHAPE = "shape"
    TEXTURE = "texture"


@dataclass(frozen=True)
class ShapeNetworksElsewhere:
    """``Resources.shape_networks`` in the texture half when a shape network is configured: the networks
    are resident in the shape half; the texture half's graph only needs to know that they exist (the
    weight-free mirrored projection is then off). ``kind`` names the shape stage of the unused head."""

    kind: str = "in the shape half"


@dataclass
class Handoff:
    """What the shape half hands the texture half. ``values``: ``SHAPE_HALF_HANDOFF`` (PreparedImage
    without its cached conditioning tensors, the visible and the unwrapped TriMesh, the uint8 normal map
    [N, N, 3]);
    ``shape_source``: the network that made the shape (None: the silhouette prior); ``stages``: seconds
    per stage; ``warnings``: what this request dropped or changed; ``replica``: where it ran."""

    values: dict[str, Any]
    shape_source: str | None
    stages: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    replica: dict = field(default_factory=dict)


@dataclass
class TextureOutcome:
    """The texture half's answer: the GLB file's bytes and what the summary reports."""

    glb: bytes
    faces: int
    vertices: int
    sources: dict[str, str]
    stages: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    replica: dict = field(default_factory=dict)


class HalfStopped(Exception):
    """Raised from a half's progress callback to end its run at a stage boundary."""


class HalfModels(ModelStore):
    """``ModelStore`` loading only one half's networks (the other half's bundle is not built)."""

    def __init__(self, config: PipelineConfig, half: Half) -> None:
        self.half = half
        super().__init__(config)

    def _shape(self, config: PipelineConfig):
        return super()._shape(config) if self.half is Half.SHAPE else None

    def _live_adaln(self, config: PipelineConfig):
        return super()._live_adaln(config) if self.half is Half.TEXTURE else None

    def _texture(self, config: PipelineConfig, live=None):
        return super()._texture(config, live) if self.half is Half.TEXTURE else None


def shape_networks_configured(config: PipelineConfig) -> bool:
    """Whether ``ModelStore`` would load a shape network for ``config`` (its ``_shape`` choice, without
    loading anything)."""
    shape = config.shape
    if config.runtime.random_networks is not None or shape.shape_model:
        return True
    if not shape.weights:
        return False
    from engine.stages.shape_networks import has_meshgen

    return has_meshgen(shape.weights)


class HalfEngine:
    """One half's resident resources (module docstring). ``config``: the served, ``for_device()``-scaled
    config; requests may pass variants of it (faces, texture size, seed, ...)."""

    MAX_VARIANTS = 4  # graphs kept for job configs other than the served one

    def __init__(self, half: Half, config: PipelineConfig) -> None:
        from triton_kernels.jit_cache import configure_jit_caches, default_cache_dir

        t0 = time.perf_counter()
        self.half, self.config = half, config
        runtime = config.runtime
        configure_jit_caches(Path(runtime.cache_dir) if runtime.cache_dir else default_cache_dir())
        from engine.runtime.backends import select_backends
        from engine.runtime.engine import make_unwrapper
        from engine.runtime.scheduler import Scheduler

        self.backends = select_backends(runtime.device)
        self.models = HalfModels(config, half)
        self.unwrapper = (make_unwrapper(config.geometry.uv_method, runtime.uv_workers)
                          if half is Half.SHAPE else None)
        self.scheduler = Scheduler(cuda=runtime.device is Device.CUDA, cpu_workers=runtime.cpu_lane_workers)
        self._graphs: OrderedDict[PipelineConfig, StageGraph] = OrderedDict()
        self.graph(config)
        self.requests = 0
        self.seconds_build = time.perf_counter() - t0
        self.seconds_warmup: float | None = None

    # ------------------------------------------------------------------------------------------ graphs
    def resources(self, config: PipelineConfig) -> Resources:
        shape = self.models.shape
        if self.half is Half.TEXTURE and shape_networks_configured(config):
            shape = ShapeNetworksElsewhere()
        return Resources(config, self.backends, self.unwrapper, shape, self.models.texture)

    def graph(self, config: PipelineConfig) -> StageGraph:
        """This half's graph for ``config`` over the resident resources (LRU-cached)."""
        graph = self._graphs.pop(config, None)
        if graph is None:
            build = shape_half_graph if self.half is Half.SHAPE else texture_half_graph
            graph = build(self.resources(config))
        self._graphs[config] = graph
        while len(self._graphs) > self.MAX_VARIANTS + 1:
            self._graphs.popitem(last=False)
        return graph

    def stage_names(self, config: PipelineConfig) -> list[str]:
        return [stage.name for stage in self.graph(config).stages]

    def info(self) -> dict:
        return {"half": self.half.value, "pid": os.getpid(), "device": self.config.runtime.device.value,
                "networks": sorted(self.models.loads), "build_s": round(self.seconds_build, 3),
                "warmup_s": round(self.seconds_warmup or 0.0, 3), "requests": self.requests}

    # ---------------------------------------------------------------------------------------- requests
    def _run(self, config: PipelineConfig, values: dict,
             progress: Progress | None) -> tuple[dict, StageTimer]:
        timer = StageTimer(device=config.runtime.device.value)
        env = self.scheduler.run(self.graph(config), values, timer, progress)
        self.requests += 1
        return env, timer

    def shape(self, config: PipelineConfig, picture: Path, segmenter: str | None,
              progress: Progress | None = None) -> Handoff:
        """Picture file -> the texture half's inputs (``Handoff``)."""
        env, timer = self._run(config, {"image_path": Path(picture), "segmenter": segmenter}, progress)
        values = {key: env[key] for key in SHAPE_HALF_HANDOFF}
        values["prepared"] = replace(values["prepared"])  # without cached conditioning tensors (12 MB)
        return Handoff(values, env.get("shape_source"), _seconds(timer), list(timer.warnings))

    def shape_from_bytes(self, config: PipelineConfig, picture: bytes, suffix: str, segmenter: str | None,
                         progress: Progress | None = None) -> Handoff:
        """As ``shape`` for a picture sent as bytes (a replica may run on another machine)."""
        with tempfile.TemporaryDirectory(prefix="assetgen-shape-") as tmp:
            path = Path(tmp) / f"picture{suffix if suffix.startswith('.') else '.png'}"
            path.write_bytes(picture)
            return self.shape(config, path, segmenter, progress)

    def texture(self, config: PipelineConfig, handoff: Handoff,
                progress: Progress | None = None) -> TextureOutcome:
        """The handoff -> the GLB's bytes (written in a temporary folder here, by the engine's exporter)."""
        with tempfile.TemporaryDirectory(prefix="assetgen-texture-") as tmp:
            output = Path(tmp) / "asset.glb"
            env, timer = self._run(config, {**handoff.values, "output": output}, progress)
            glb = output.read_bytes()
        if handoff.shape_source is not None:
            env["shape_source"] = handoff.shape_source
        asset = env["asset"]
        return TextureOutcome(glb, int(asset.num_faces), int(asset.num_vertices),
                              generate_sources(env, config), _seconds(timer), list(timer.warnings))

    # ------------------------------------------------------------------------------------------ lifecycle
    def warmup(self, progress: Progress | None = None) -> float:
        """One request on a synthetic picture, so every kernel is compiled (or loaded from the JIT cache)
        and every network has run once. The texture half makes its input with the weight-free shape half
        over its own backends (its own networks stay the ones that run)."""
        from engine.runtime.engine import _synthetic_picture, make_unwrapper

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="assetgen-warmup-") as tmp:
            picture = Path(tmp) / "warmup.png"
            _synthetic_picture(picture)
            if self.half is Half.SHAPE:
                self.unwrapper.warmup()
                self.shape(self.config, picture, None, progress)
            else:
                unwrapper = make_unwrapper(self.config.geometry.uv_method, 1)
                try:
                    prior = shape_half_graph(Resources(self.config, self.backends, unwrapper))
                    env = prior.run({"image_path": picture, "segmenter": None}, StageTimer(device="cpu"))
                finally:
                    unwrapper.close()
                handoff = Handoff({key: env[key] for key in SHAPE_HALF_HANDOFF}, None, {})
                self.texture(self.config, handoff, progress)
        self.requests = 0
        self.seconds_warmup = time.perf_counter() - t0
        return self.seconds_warmup

    def close(self) -> None:
        self.scheduler.close()
        if self.unwrapper is not None:
            self.unwrapper.close()


def _seconds(timer: StageTimer) -> dict[str, float]:
    return {t.name: round(t.seconds, 6) for t in timer.timings}

