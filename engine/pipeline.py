"""Image -> asset and mesh -> asset, as declared stage graphs over the engine's resources. Orchestration only.

The graphs are built once per engine (``engine.runtime.engine.Engine``) from its ``Resources``: the typed
config, the backends picked once for the device, the UV unwrapper and the resident networks. Stages are the
functions of ``engine/stages/``; each names its inputs, outputs and scheduler lane.

- ``generate``: picture -> mask/crop -> shape (a network, or the weight-free silhouette prior + marching
  cubes) -> floaters + QEM simplification -> hidden faces -> UV atlas -> tangent-space normal bake ->
  base-colour texture (TextureGen views, or the weight-free reference projection) -> GLB. The texture's
  fusion plan needs only the unwrapped mesh, so it runs on the ``gpu-aux`` lane beside the bake/diffusion.
  The GLB's geometry buffers (after the unwrap) and normal-map PNG (after the bake) are built on the
  ``cpu`` lane beside the GPU stages; the last stage only encodes the base colour and writes the file.
- ``shape_half_graph`` / ``texture_half_graph``: ``generate`` cut after the geometry outputs (unwrapped
  mesh, normal map) into two graphs of the same stages, the paper's MeshGen / TextureGen service split
  (engine/service/ray_deployments.py serves each half from a Ray Serve deployment of its own).
- ``process``: any mesh file -> (repair) -> the same geometry post-processing -> texture transferred from
  the input's own materials -> GLB.

Objects live in the rig frame: normalised into the unit sphere (``camera_rig`` radius 1), +Y up, metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from engine.config import InpaintFill, PipelineConfig
from engine.geometry.mesh import TriMesh
from engine.runtime.backends import Backends
from engine.runtime.scheduler import Stage, StageGraph
from engine.stages import geometry, io, texture
from profiling.stage_timer import StageTimer, substep

SHAPE_SOURCE_PRIOR = (
    "silhouette prior (weight-free: no shape checkpoint configured; mask distance-transform "
    "inflation, mirrored front to back)"
)
TEXTURE_SOURCE_PROJECTION = (
    "reference projection (weight-free: front-view backprojection of the input picture "
    "+ 3D inpainting: UV rings, then k nearest texels in 3D{harmonic})"
)
TEXTURE_SOURCE_MIRRORED = (
    "reference projection (weight-free: the input picture backprojected onto the front and, mirrored, "
    "onto the back of the mirror-symmetric shape prior, cross-faded across the silhouette "
    "+ 3D inpainting of the rest: UV rings, then k nearest texels in 3D{harmonic})"
)
TEXTURE_SOURCE_HARMONIC = ", then a harmonic fill over the surface"


@dataclass(frozen=True)
class Resources:
    """What the stages take from the engine (built once, reused by every request)."""

    config: PipelineConfig
    backends: Backends
    unwrapper: Any  # .unwrap(mesh, resolution) -> (TriMesh with uvs, UvReport)
    shape_networks: Any = None  # MeshGenNetworks / HunyuanNetworks (engine/stages/shape_networks.py)
    texture_networks: Any = None  # TextureNetworks (engine/stages/texture_networks.py)


@dataclass
class RunResult:
    output: Path
    mesh: TriMesh
    timer: StageTimer
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)        # the configuration's (same for every request)
    warnings: list[str] = field(default_factory=list)     # this request's: what was dropped or changed


def _shape_network(prepared, *, res: Resources) -> dict:
    from engine.stages.shape_networks import run_shape

    cfg = res.config
    result = run_shape(res.shape_networks, prepared.rgba, cfg.shape, cfg.runtime.device.value,
                       cfg.runtime.seed)
    with substep("mesh to the stage format"):
        dense = res.backends.tensor_mesh(result.verts, result.faces)
    return {"dense": dense, "shape_source": result.source,
            "_note": f"{result.source}; {result.queries} SDF queries, {dense.num_faces} faces"}


def _shape_stages(res: Resources) -> list[Stage]:
    cfg, b = res.config, res.backends
    if res.shape_networks is not None:
        return [Stage(f"shape ({res.shape_networks.kind})", ("prepared",), ("dense", "shape_source"),
                      partial(_shape_network, res=res), "gpu")]
    return [Stage("shape (silhouette prior)", ("prepared",), ("sdf",),
                  partial(geometry.shape_prior, shape=cfg.shape, backends=b), "gpu"),
            Stage("marching cubes", ("sdf",), ("dense",), partial(geometry.extract, backends=b), "gpu")]


def _post_processing(res: Resources, floater_fraction: float) -> list[Stage]:
    g, b = res.config.geometry, res.backends
    return [
        Stage("floaters + simplify", ("dense",), ("low",),
              partial(geometry.simplify, geometry=g, backends=b, floater_fraction=floater_fraction), "gpu"),
        Stage("hidden-face removal", ("low",), ("visible",),
              partial(geometry.hidden_faces, geometry=g, backends=b), "gpu"),
        Stage("uv unwrap + tangents", ("visible",), ("unwrapped",),
              partial(geometry.uv_unwrap, texture=res.config.texture, unwrapper=res.unwrapper), "cpu"),
        Stage("normal bake", ("unwrapped", "dense"), ("normal_map",),
              partial(geometry.normal_bake, geometry=g, backends=b), "gpu"),
    ]


def _texture_stages(res: Resources) -> list[Stage]:
    cfg, b, t = res.config, res.backends, res.config.texture
    nets = res.texture_networks
    if nets is not None:
        upscale = nets.upscale(t)
        return [
            Stage("texture plan", ("unwrapped",), ("fusion_plan",),
                  partial(texture.generated_plan, texture=t, upscale=upscale, backends=b), "gpu-aux"),
            Stage("texture conditions (TextureGen)", ("visible", "prepared"), ("conditions",),
                  partial(texture.generated_conditions, texture=t, networks=nets,
                          device=cfg.runtime.device.value), "gpu"),
            Stage("texture views (TextureGen)", ("unwrapped", "normal_map", "prepared", "conditions"),
                  ("views", "texture_source"),
                  partial(texture.generated_views, texture=t, networks=nets, device=cfg.runtime.device.value,
                          seed=cfg.runtime.seed), "gpu"),
            Stage("texture fuse", ("fusion_plan", "views"), ("base_color",),
                  partial(texture.generated_fuse, backends=b), "gpu"),
        ]
    mirror = res.shape_networks is None and t.mirror_back   # the prior's back mirrors its front
    return [
        Stage("texture plan", ("unwrapped", "prepared"), ("fusion_plan",),
              partial(texture.reference_plan, texture=t, backends=b, mirror=mirror), "gpu-aux"),
        Stage("texture fuse", ("fusion_plan", "prepared"), ("base_color",),
              partial(texture.reference_fuse, texture=t, backends=b, mirror=mirror), "gpu"),
    ]


def _export_stages() -> list[Stage]:
    """Only the base colour's PNG and the write wait for the texture; the rest runs beside the GPU stages."""
    return [
        Stage("pack geometry buffers", ("unwrapped",), ("geometry_buffers",), io.pack_geometry, "cpu"),
        Stage("encode normal map", ("normal_map",), ("normal_png",), io.encode_normal_map, "cpu"),
        Stage("export glb", ("unwrapped", "normal_map", "base_color", "geometry_buffers", "normal_png",
                             "output"), ("asset",), io.export, "cpu", commits=True),
    ]


def generate_graph(res: Resources) -> StageGraph:
    stages = [
        Stage("preprocess", ("image_path", "segmenter"), ("prepared",), io.load_image, "cpu"),
        *_shape_stages(res),
        *_post_processing(res, res.config.geometry.floater_min_fraction),
        *_texture_stages(res),
        *_export_stages(),
    ]
    return StageGraph(stages, provided=("image_path", "segmenter", "output"))


# ---------------------------------------------------------------------------------- the two halves
GEOMETRY_OUTPUTS = ("unwrapped", "normal_map")  # the shape half ends once these exist
# the texture half's inputs from the shape half ("visible": TextureGen's early condition encoding reads it)
SHAPE_HALF_HANDOFF = ("prepared", "visible", "unwrapped", "normal_map")


def split_graph(graph: StageGraph, head_outputs: tuple[str, ...]) -> tuple[StageGraph, StageGraph]:
    """(head, tail) of a declared graph: the head is the stages that ``head_outputs`` depend on (their
    producers and everything upstream), the tail the other stages. Each half is a graph of its own whose
    provided values are what it reads from the caller or from the other half; the stages are the graph's
    own objects, so together they are exactly ``graph``."""
    producer = {key: stage for stage in graph.stages for key in stage.outputs}
    head_names: set[str] = set()
    todo = list(head_outputs)
    while todo:
        stage = producer.get(todo.pop())
        if stage is not None and stage.name not in head_names:
            head_names.add(stage.name)
            todo.extend(stage.inputs)
    halves = ([s for s in graph.stages if s.name in head_names],
              [s for s in graph.stages if s.name not in head_names])
    graphs = []
    for stages in halves:
        made = {key for stage in stages for key in stage.outputs}
        reads = dict.fromkeys(key for stage in stages for key in stage.inputs if key not in made)
        graphs.append(StageGraph(stages, provided=tuple(reads)))
    return graphs[0], graphs[1]


def shape_half_graph(res: Resources) -> StageGraph:
    """The generate graph up to the geometry outputs (MeshGen's side of the paper's service split):
    picture -> dense mesh -> simplified, hidden faces removed, unwrapped + baked normal map."""
    return split_graph(generate_graph(res), GEOMETRY_OUTPUTS)[0]


def texture_half_graph(res: Resources) -> StageGraph:
    """The rest of the generate graph (TextureGen's side): texture plan / views / fuse and the GLB export,
    reading ``SHAPE_HALF_HANDOFF`` and ``output``."""
    return split_graph(generate_graph(res), GEOMETRY_OUTPUTS)[1]


def process_graph(res: Resources) -> StageGraph:
    cfg, b = res.config, res.backends
    stages = [
        Stage("load mesh", ("mesh_path",), ("source",), io.load_mesh, "cpu"),
        Stage("repair", ("source",), ("dense",), partial(geometry.repair, shape=cfg.shape, backends=b),
              "gpu"),
        *_post_processing(res, cfg.geometry.input_floater_fraction),
        Stage("texture transfer", ("unwrapped", "source"), ("base_color",),
              partial(texture.transfer, texture=cfg.texture), "cpu"),
        *_export_stages(),
    ]
    return StageGraph(stages, provided=("mesh_path", "output"))


def generate_sources(env: dict, config: PipelineConfig) -> dict[str, str]:
    """What made the shape and the texture, from a generate run's values (``shape_source`` and
    ``texture_source`` where networks ran) and its config."""
    mirrored = "shape_source" not in env and config.texture.mirror_back   # the prior, with its mirror
    projection = TEXTURE_SOURCE_MIRRORED if mirrored else TEXTURE_SOURCE_PROJECTION
    harmonic = config.texture.inpaint_fill is InpaintFill.HARMONIC           # CPU and GPU fusion alike
    projection = projection.format(harmonic=TEXTURE_SOURCE_HARMONIC if harmonic else "")
    return {"shape": env.get("shape_source", SHAPE_SOURCE_PRIOR),
            "texture": env.get("texture_source", projection)}


def generate_result(env: dict, output: Path, timer: StageTimer, config: PipelineConfig) -> RunResult:
    return RunResult(Path(output), env["asset"], timer, sources=generate_sources(env, config),
                     notes=list(config.notes), warnings=list(timer.warnings))


def process_result(env: dict, mesh_path: Path, output: Path, timer: StageTimer,
                   config: PipelineConfig) -> RunResult:
    return RunResult(Path(output), env["asset"], timer, sources={"geometry": f"input mesh {mesh_path}"},
                     notes=list(config.notes), warnings=list(timer.warnings))
