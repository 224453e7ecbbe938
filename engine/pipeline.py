"""Image -> asset and mesh -> asset, as declared stage graphs. Orchestration only.

Every stage is a small function over named values; the math lives in the stage modules. Two graphs:

- ``generate``: picture -> mask/crop -> shape SDF -> marching cubes -> floaters + QEM simplification ->
  hidden faces -> UV atlas -> tangent-space normal bake -> base-colour texture -> GLB.
  Shape source: with no shape checkpoint configured (the only source until the models issue lands) the
  weight-free silhouette-inflation prior (``engine/geometry/silhouette_prior.py``); the texture is the
  weight-free reference projection + 3D inpainting (``engine/texture``). ``GenerateResult.sources`` says so.
- ``process``: any mesh file -> (repair) -> the same geometry post-processing -> texture transferred from
  the input's own materials -> GLB.

Objects live in the rig frame: normalised into the unit sphere (``camera_rig`` radius 1), +Y up, metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.config import Device, PipelineConfig
from engine.geometry.mesh import TriMesh, validate_mesh, vertex_normals
from engine.geometry.sdf_grid import SdfGrid
from engine.runtime.scheduler import Stage, StageGraph
from profiling.stage_timer import StageTimer

SHAPE_SOURCE_PRIOR = (
    "silhouette prior (weight-free: no shape checkpoint configured; mask distance-transform "
    "inflation, mirrored front to back)"
)
TEXTURE_SOURCE_PROJECTION = (
    "reference projection (weight-free: front-view backprojection of the input picture "
    "+ 3D inpainting: UV rings, then k nearest texels in 3D)"
)


@dataclass
class RunResult:
    output: Path
    mesh: TriMesh
    timer: StageTimer
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- stages
def _stage_load_image(image_path: Path, segmenter: str | None) -> dict:
    from engine.io.image_input import prepare_image

    prepared = prepare_image(image_path, segmenter=segmenter)
    return {"prepared": prepared, "_note": f"mask from {prepared.mask_source}"}


def _stage_shape_prior(prepared, config: PipelineConfig) -> dict:
    from engine.geometry.silhouette_prior import sdf_from_mask

    device = "cuda" if _on_gpu(config) else None    # the field is built where marching cubes reads it
    grid = sdf_from_mask(prepared.mask, resolution=config.shape.grid_resolution, device=device)
    return {"sdf": grid, "_note": f"{config.shape.grid_resolution}^3 grid"}


def _stage_shape_network(prepared, config: PipelineConfig) -> dict:
    """A learned backbone (engine/models/shape_backbone.py): picture -> dense mesh on the device."""
    from engine.geometry.mesh import TriMesh
    from engine.models import shape_backbone

    shape, device = config.shape, ("cuda" if _on_gpu(config) else "cpu")
    run = shape_backbone.hunyuan3d_shape if shape.shape_model else shape_backbone.meshgen_shape
    result = run(prepared.rgba, shape.shape_model or shape.weights, shape.grid_resolution, shape.bounds,
                 device, seed=config.runtime.seed)
    if _on_gpu(config):
        from engine.geometry.device_mesh import DeviceMesh

        dense = DeviceMesh(result.verts.float().contiguous(), result.faces.int().contiguous())
    else:
        dense = TriMesh(result.verts.float().numpy(), result.faces.numpy().astype(np.int32))
    return {"dense": dense, "shape_source": result.source,
            "_note": f"{result.source}; {result.queries} SDF queries, {int(result.faces.shape[0])} faces"}


def _on_gpu(config: PipelineConfig) -> bool:
    return config.runtime.device is Device.CUDA


def _device_mesh(mesh):
    """A TriMesh uploaded as a DeviceMesh for the GPU stages (a DeviceMesh passes through)."""
    from engine.geometry.device_mesh import DeviceMesh
    from triton_kernels.numba_cuda import kernel_device

    return mesh if isinstance(mesh, DeviceMesh) else DeviceMesh.from_trimesh(mesh, kernel_device())


def _stage_extract(sdf, config: PipelineConfig) -> dict:
    from engine.geometry.marching_cubes import extract_mesh

    if _on_gpu(config):  # the Triton kernel runs where the field lives
        import torch

        if isinstance(sdf.values, np.ndarray):
            sdf = SdfGrid(torch.from_numpy(np.ascontiguousarray(sdf.values)).cuda(), sdf.lo, sdf.hi)
        dense = _device_mesh(extract_mesh(sdf))
    else:
        dense = extract_mesh(sdf)
    return {"dense": dense, "_note": f"{dense.num_faces} faces"}


def _placement(config: PipelineConfig):
    from engine.geometry.simplify import Placement

    return Placement(config.geometry.placement.value)


def _stage_simplify(dense, config: PipelineConfig) -> dict:
    fraction, budget = config.geometry.floater_min_fraction, config.geometry.faces
    if _on_gpu(config):
        from engine.geometry.floaters_gpu import remove_floaters_gpu
        from engine.geometry.simplify_gpu import simplify_qem_gpu

        kept, removed = remove_floaters_gpu(_device_mesh(dense), fraction)
        low, report = simplify_qem_gpu(kept, budget, _placement(config))
    else:
        from engine.geometry.floaters import remove_floaters
        from engine.geometry.simplify import simplify_qem

        kept, removed = remove_floaters(dense, fraction)
        low, report = simplify_qem(kept, budget, _placement(config))
    note = f"{removed} floaters removed, {report.faces_in} -> {report.faces_out} faces"
    if not report.reached:
        note += f"; budget not reached: {report.reason}"
    return {"low": low, "_note": note}


def _stage_hidden_faces(low, config: PipelineConfig) -> dict:
    g = config.geometry
    if _on_gpu(config):
        from engine.geometry.hidden_faces_gpu import remove_hidden_faces_gpu

        visible, report = remove_hidden_faces_gpu(low, g.visibility_views, g.visibility_resolution)
    else:
        from engine.geometry.hidden_faces import remove_hidden_faces

        visible, report = remove_hidden_faces(low, g.visibility_views, g.visibility_resolution)
    removed = report.faces_in - report.faces_out
    return {
        "visible": visible,
        "_note": f"{removed} hidden faces removed ({g.visibility_views} views at "
        f"{g.visibility_resolution} px)",
    }


def _stage_uv(visible: TriMesh, config: PipelineConfig) -> dict:
    from engine.geometry.tangents import compute_tangents

    mesh = visible.copy(normals=vertex_normals(visible.vertices, visible.faces))
    if _on_gpu(config):  # the GPU machine's CPU cores: charts per spatial part in worker processes
        from engine.geometry.uv_parallel import unwrap_uv_parallel

        unwrapped, report = unwrap_uv_parallel(mesh, resolution=config.texture.atlas_size)
    else:
        from engine.geometry.uv_unwrap import unwrap_uv

        unwrapped, report = unwrap_uv(mesh, resolution=config.texture.atlas_size)
    unwrapped.tangents = compute_tangents(unwrapped)
    return {
        "unwrapped": unwrapped,
        "_note": f"{report.charts} charts, utilisation {100 * report.utilisation:.1f}%",
    }


def _stage_bake(unwrapped: TriMesh, dense, config: PipelineConfig) -> dict:
    g = config.geometry
    if _on_gpu(config):
        from engine.geometry.normal_bake_gpu import bake_normal_map_gpu as bake
    else:
        from engine.geometry.normal_bake import bake_normal_map as bake
    normal_map, report = bake(
        unwrapped, dense, size=g.normal_map_size, max_distance_fraction=g.bake_max_distance
    )
    return {
        "normal_map": normal_map,
        "_note": f"{g.normal_map_size}^2, {report.rejected_distance} texels beyond the distance filter",
    }


def _stage_texture_reference(unwrapped: TriMesh, prepared, config: PipelineConfig) -> dict:
    from engine.texture.reference_projection import texture_from_reference
    from engine.texture.views import camera_rig

    atlas, stats = texture_from_reference(
        unwrapped, prepared.rgba[..., :3], prepared.mask, config.texture.atlas_size, camera_rig()[0],
        device="cuda" if _on_gpu(config) else "cpu",
    )
    note = (f"{config.texture.atlas_size}^2, {stats['known_texels']} of {stats['valid_texels']} texels seen "
            f"from the front, rest inpainted in 3D ({stats.get('inpaint_unfilled', 0)} unfilled)")
    return {"base_color": atlas, "_note": note}


def _stage_texture_generated(unwrapped: TriMesh, normal_map, prepared, config: PipelineConfig) -> dict:
    from engine.models.texture_backbone import texturegen_atlas

    # the condition normals carry the baked normal map (paper 7.2)
    atlas, note = texturegen_atlas(unwrapped.copy(normal_map=normal_map), prepared.rgba, config.shape.weights,
                                   config.preset.value, "cuda" if _on_gpu(config) else "cpu",
                                   config.texture.atlas_size, seed=config.runtime.seed)
    return {"base_color": atlas, "texture_source": note, "_note": note}


def _stage_texture_transfer(unwrapped: TriMesh, source: TriMesh, config: PipelineConfig) -> dict:
    from engine.texture.transfer import transfer_texture

    atlas = transfer_texture(source, unwrapped, config.texture.atlas_size)
    return {"base_color": atlas, "_note": f"{config.texture.atlas_size}^2 from the input's materials"}


def _stage_export(unwrapped: TriMesh, normal_map: np.ndarray, base_color: np.ndarray, output: Path) -> dict:
    from engine.io.glb_export import write_glb

    asset = unwrapped.copy(normal_map=normal_map, base_color=base_color)
    write_glb(asset, output)
    return {"asset": asset, "_note": f"{output.stat().st_size / 1e6:.2f} MB"}


def _stage_load_mesh(mesh_path: Path) -> dict:
    from engine.io.asset_load import load_mesh

    source = load_mesh(mesh_path)
    validate_mesh(source, f"mesh {mesh_path}")
    return {"source": source, "_note": f"{source.num_faces} faces"}


def _stage_repair(source: TriMesh, config: PipelineConfig) -> dict:
    """Dense geometry for post-processing: the input itself when it is a clean edge-manifold, consistently
    wound mesh; otherwise a watertight remesh of it (paper 5.1), the documented repair."""
    from engine.geometry.mesh import clean_mesh
    from engine.geometry.topology import edge_topology

    dense = clean_mesh(source, weld_tolerance=1e-7 * max(source.diagonal(), 1e-12))
    topo = edge_topology(dense.faces)
    if topo.is_manifold and topo.is_consistently_wound:
        return {"dense": _device_mesh(dense) if _on_gpu(config) else dense,
                "_note": f"input used as is ({topo.boundary_edges} boundary edges)"}
    if _on_gpu(config):
        from engine.geometry.watertight_gpu import watertight_mesh_gpu

        remeshed = _device_mesh(watertight_mesh_gpu(dense, config.shape.grid_resolution, mc="sparse"))
    else:
        from engine.geometry.watertight import watertight_mesh

        remeshed = watertight_mesh(dense, config.shape.grid_resolution)
    return {
        "dense": remeshed,
        "_note": f"remeshed watertight at {config.shape.grid_resolution}^3: input had "
        f"{topo.nonmanifold_edges} non-manifold and {topo.inconsistent_edges} inconsistently "
        f"wound edges",
    }


# ----------------------------------------------------------------------------------------------- graphs
def _post_processing(config: PipelineConfig) -> list[Stage]:
    return [
        Stage("floaters + simplify", ("dense",), ("low",), lambda dense: _stage_simplify(dense, config)),
        Stage("hidden-face removal", ("low",), ("visible",), lambda low: _stage_hidden_faces(low, config)),
        Stage(
            "uv unwrap + tangents", ("visible",), ("unwrapped",), lambda visible: _stage_uv(visible, config)
        ),
        Stage(
            "normal bake",
            ("unwrapped", "dense"),
            ("normal_map",),
            lambda unwrapped, dense: _stage_bake(unwrapped, dense, config),
        ),
    ]


def _check_weights(folder: str | None) -> None:
    """--weights DIR must hold MeshGen's or TextureGen's files (engine/models/*_backbone.py)."""
    from engine.errors import WeightsError
    from engine.models.shape_backbone import MESHGEN_FILES, has_meshgen
    from engine.models.texture_backbone import REQUIRED, has_texturegen

    if folder is not None and not has_meshgen(folder) and not has_texturegen(folder):
        names = ", ".join(sorted(set(MESHGEN_FILES.values()) | set(REQUIRED.values())))
        raise WeightsError(f"--weights folder '{folder}' holds neither MeshGen nor TextureGen checkpoints "
                           f"(looked for {names})", "point --weights at the converted engine checkpoints")


def _shape_stages(config: PipelineConfig) -> list[Stage]:
    from engine.models.shape_backbone import has_meshgen

    if config.shape.shape_model or has_meshgen(config.shape.weights):
        name = "shape (Hunyuan3D-2)" if config.shape.shape_model else "shape (MeshGen)"
        return [Stage(name, ("prepared",), ("dense", "shape_source"),
                      lambda prepared: _stage_shape_network(prepared, config))]
    return [
        Stage("shape (silhouette prior)", ("prepared",), ("sdf",),
              lambda prepared: _stage_shape_prior(prepared, config)),
        Stage("marching cubes", ("sdf",), ("dense",), lambda sdf: _stage_extract(sdf, config)),
    ]


def _texture_stages(config: PipelineConfig) -> list[Stage]:
    from engine.models.texture_backbone import has_texturegen

    if has_texturegen(config.shape.weights):
        return [Stage("texture (TextureGen)", ("unwrapped", "normal_map", "prepared"),
                      ("base_color", "texture_source"),
                      lambda unwrapped, normal_map, prepared: _stage_texture_generated(
                          unwrapped, normal_map, prepared, config))]
    return [Stage("texture (reference projection)", ("unwrapped", "prepared"), ("base_color",),
                  lambda unwrapped, prepared: _stage_texture_reference(unwrapped, prepared, config))]


def generate_graph(config: PipelineConfig) -> StageGraph:
    stages = [
        Stage("preprocess", ("image_path", "segmenter"), ("prepared",), _stage_load_image),
        *_shape_stages(config),
        *_post_processing(config),
        *_texture_stages(config),
        Stage("export glb", ("unwrapped", "normal_map", "base_color", "output"), ("asset",), _stage_export),
    ]
    return StageGraph(stages, provided=("image_path", "segmenter", "output"))


def process_graph(config: PipelineConfig) -> StageGraph:
    stages = [
        Stage("load mesh", ("mesh_path",), ("source",), _stage_load_mesh),
        Stage("repair", ("source",), ("dense",), lambda source: _stage_repair(source, config)),
        *_post_processing(config),
        Stage(
            "texture transfer",
            ("unwrapped", "source"),
            ("base_color",),
            lambda unwrapped, source: _stage_texture_transfer(unwrapped, source, config),
        ),
        Stage("export glb", ("unwrapped", "normal_map", "base_color", "output"), ("asset",), _stage_export),
    ]
    return StageGraph(stages, provided=("mesh_path", "output"))


def generate(
    image_path: str | Path,
    output: str | Path,
    config: PipelineConfig,
    segmenter: str | None = None,
    progress=None,
) -> RunResult:
    """Run the image -> GLB pipeline. ``config`` should already be ``for_device()``-scaled."""
    _check_weights(config.shape.weights)
    timer = StageTimer(device=config.runtime.device.value)
    env = generate_graph(config).run(
        {"image_path": Path(image_path), "segmenter": segmenter, "output": Path(output)}, timer, progress
    )
    return RunResult(
        Path(output),
        env["asset"],
        timer,
        sources={"shape": env.get("shape_source", SHAPE_SOURCE_PRIOR),
                 "texture": env.get("texture_source", TEXTURE_SOURCE_PROJECTION)},
        notes=list(config.notes),
    )


def process(mesh_path: str | Path, output: str | Path, config: PipelineConfig, progress=None) -> RunResult:
    """Run the mesh -> GLB geometry post-processing with texture transfer."""
    timer = StageTimer(device=config.runtime.device.value)
    env = process_graph(config).run({"mesh_path": Path(mesh_path), "output": Path(output)}, timer, progress)
    return RunResult(
        Path(output),
        env["asset"],
        timer,
        sources={"geometry": f"input mesh {mesh_path}"},
        notes=list(config.notes),
    )
