"""What the worker process runs per job: a ``Runner`` turns one picture into one GLB file.

* ``EngineRunner`` (production): the resident ``Engine`` built once from the served config and warmed
  once. A job whose options change the config (faces, texture size, seed, ...) runs a stage graph built
  for that config over the same engine's backends, UV unwrapper, networks and scheduler (graphs are
  cached, a few configs at a time), so no network is loaded twice.
* ``RayRunner`` (``--backend ray``, engine/service/ray_deployments.py): the same job through the shape and
  texture halves' Ray Serve deployments; this process holds no engine.
* ``CardRunner``: the picture's cut-out on a flat card: the engine's own picture preparation (decode,
  mask, centred crop), a grid mesh over the mask's cells, the crop as base colour, a flat normal map, the
  engine's GLB export. Real and cheap (tens of milliseconds): the service's load and soak tests, and
  previews. Its GLB follows the asset contract (engine/io/glb_export.py).

``run(picture, output, config, segmenter, progress)`` writes ``output`` (atomically, by the engine's
exporter) and returns a JSON-able summary; ``progress(index, count, stage, seconds_or_None)`` is called as
stages start and end (the worker raises from it to stop a job at a stage boundary).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.config import Device, PipelineConfig
from engine.service.config import RunnerKind
from engine.service.ray_config import RayConfig

Progress = Callable[[int, int, str, "float | None"], None]


class Runner(Protocol):
    def warmup(self) -> float: ...

    def run(self, picture: Path, output: Path, config: PipelineConfig, segmenter: str | None,
            progress: Progress) -> dict: ...

    def close(self) -> None: ...

    def info(self) -> dict: ...  # for /readyz's worker description


def make_runner(kind: RunnerKind, config: PipelineConfig, ray: RayConfig | None = None) -> Runner:
    """``ray``: run jobs on the Ray Serve deployments (``--backend ray``) instead of in this process."""
    if ray is not None:
        from engine.service.ray_deployments import RayRunner

        return RayRunner(config, ray)
    if kind is RunnerKind.ENGINE:
        return EngineRunner(config)
    return CardRunner(config)


class EngineRunner:
    """The resident engine (module docstring). ``config``: the served, ``for_device()``-scaled config."""

    MAX_VARIANTS = 4  # stage graphs kept for job configs other than the served one

    def __init__(self, config: PipelineConfig) -> None:
        from engine.runtime.engine import Engine

        self.engine = Engine(config)
        self._variants: OrderedDict[PipelineConfig, object] = OrderedDict()

    def warmup(self) -> float:
        return self.engine.warmup()

    def close(self) -> None:
        self.engine.close()

    def info(self) -> dict:
        """After the warm-up: on CUDA the GPU's name and its memory (the warm-up's peak included);
        ``gpu_memory`` is None on the CPU (no GPU figure to report)."""
        cuda = self.engine.config.runtime.device is Device.CUDA
        info = {"backend": "local", "gpu_memory": cuda_memory() if cuda else None}
        if cuda:
            import torch

            info["gpu"] = torch.cuda.get_device_name()
        return info

    def run(self, picture: Path, output: Path, config: PipelineConfig, segmenter: str | None,
            progress: Progress) -> dict:
        engine = self.engine
        cuda = engine.config.runtime.device is Device.CUDA
        if cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        if config == engine.config:
            result = engine.generate(picture, output, segmenter=segmenter, progress=progress)
        else:
            result = self._run_variant(picture, output, config, segmenter, progress)
        summary = _summary(result.mesh, result.timer, output)
        summary["sources"] = dict(result.sources)
        if cuda:
            summary["gpu_memory"] = cuda_memory()  # this job's peak: the stats were reset at its start
        return summary

    def _run_variant(self, picture: Path, output: Path, config: PipelineConfig, segmenter: str | None,
                     progress: Progress):
        from engine.pipeline import generate_result
        from engine.runtime.engine import check_output
        from profiling.stage_timer import StageTimer

        out = check_output(output)
        graph = self._graph(config)
        timer = StageTimer(device=config.runtime.device.value)
        values = {"image_path": Path(picture), "segmenter": segmenter, "output": out}
        env = self.engine.scheduler.run(graph, values, timer, progress)
        self.engine.requests += 1
        return generate_result(env, out, timer, config)

    def _graph(self, config: PipelineConfig):
        """The generate graph for ``config`` over the engine's resident resources (LRU-cached)."""
        from engine.pipeline import Resources, generate_graph

        graph = self._variants.pop(config, None)
        if graph is None:
            engine = self.engine
            resources = Resources(config, engine.backends, engine.unwrapper, engine.models.shape,
                                  engine.models.texture)
            graph = generate_graph(resources)
        self._variants[config] = graph
        while len(self._variants) > self.MAX_VARIANTS:
            self._variants.popitem(last=False)
        return graph


class CardRunner:
    """The picture's cut-out on a flat card (module docstring)."""

    MAX_CELLS = 64  # grid cells per side at most
    CROP_LIMIT = 512  # crop edge at most (the base-colour texture)
    STAGES = ("preprocess", "card mesh", "export glb")

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config

    def warmup(self) -> float:
        return 0.0

    def close(self) -> None:
        return None

    def info(self) -> dict:
        return {"backend": "local"}

    def run(self, picture: Path, output: Path, config: PipelineConfig, segmenter: str | None,
            progress: Progress) -> dict:
        from engine.io.glb_export import write_glb
        from engine.io.image_input import prepare_image
        from engine.runtime.engine import check_output
        from profiling.stage_timer import StageTimer

        out = check_output(output)
        timer = StageTimer(device="cpu")
        steps = (
            lambda _: prepare_image(picture, segmenter=segmenter, size=min(config.texture.atlas_size,
                                                                           self.CROP_LIMIT)),
            lambda prepared: card_mesh(prepared.rgba, prepared.mask, self._cells(config.geometry.faces)),
            lambda mesh: write_glb(mesh, out) or mesh,
        )
        value = None
        for index, (name, step) in enumerate(zip(self.STAGES, steps), start=1):
            progress(index, len(steps), name, None)
            with timer.measure(name, "cpu") as measure:
                value = step(value)
            progress(index, len(steps), name, measure.timing.seconds)
        summary = _summary(value, timer, out)
        summary["sources"] = {"shape": "card (the picture's cut-out on a flat grid)",
                              "texture": "the centred crop of the picture"}
        return summary

    def _cells(self, faces: int) -> int:
        return max(1, min(self.MAX_CELLS, int((faces / 2) ** 0.5)))


def card_mesh(rgba: np.ndarray, mask: np.ndarray, cells: int):
    """A flat mesh over the object: the crop split into ``cells`` x ``cells`` squares, those mostly
    covered by the object kept (two counter-clockwise triangles facing +Z each).

    rgba: uint8 [S, S, 4] centred crop; mask: bool [S, S]. Returns a TriMesh with vertices in the XY plane
    (the crop spans [-0.5, 0.5] m, +Y up), glTF UVs (crop pixel / S, v down), +Z normals, tangents,
    the crop composited on grey as base colour and a flat 8x8 normal map.
    """
    import cv2

    from engine.geometry.mesh import TriMesh
    from engine.geometry.tangents import compute_tangents

    share = cv2.resize(mask.astype(np.float32), (cells, cells), interpolation=cv2.INTER_AREA)
    filled = share >= 0.5                                                           # [rows, cols]
    if not filled.any():                                                            # a thin object
        filled[cells // 2, cells // 2] = True
    rows, cols = np.nonzero(filled)
    corner = lambda r, c: r * (cells + 1) + c  # noqa: E731 - grid vertex index
    a, b = corner(rows, cols), corner(rows + 1, cols)
    c, d = corner(rows + 1, cols + 1), corner(rows, cols + 1)
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])        # [F, 3] CCW from +Z
    used, faces = np.unique(faces, return_inverse=True)
    faces = faces.reshape(-1, 3)
    r, cl = np.divmod(used, cells + 1)
    uvs = np.stack([cl / cells, r / cells], 1).astype(np.float32)                   # [V, 2] v down
    vertices = np.stack([uvs[:, 0] - 0.5, 0.5 - uvs[:, 1], np.zeros(len(used))], 1)  # [V, 3] +Y up
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    base = (rgba[..., :3] * alpha + 128.0 * (1.0 - alpha)).round().astype(np.uint8)  # on grey
    flat = np.empty((8, 8, 3), np.uint8)
    flat[...] = (128, 128, 255)
    mesh = TriMesh(vertices, faces, normals=np.tile(np.float32([0, 0, 1]), (len(used), 1)), uvs=uvs,
                   base_color=base, normal_map=flat)
    mesh.tangents = compute_tangents(mesh)
    return mesh


def cuda_memory() -> dict[str, int]:
    """This process's CUDA memory in bytes: allocated and reserved now (torch's caching allocator), and
    the peak allocated since the last ``torch.cuda.reset_peak_memory_stats``."""
    import torch

    return {"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved(),
            "peak": torch.cuda.max_memory_allocated()}


def _summary(mesh, timer, output: Path) -> dict:
    return {"faces": int(mesh.num_faces), "vertices": int(mesh.num_vertices),
            "bytes": Path(output).stat().st_size,
            "stages": {t.name: round(t.seconds, 6) for t in timer.timings},
            "wall_s": round(timer.wall(), 6), "finished": time.time()}
