"""UV atlas of the simplified mesh with xatlas (paper 6.3): charts, LSCM, packing.

Pipeline:
  1. Smooth vertex normals are fixed BEFORE any seam split (area-weighted over position-welded
     topology when the mesh has none), so chart seams never change shading.
  2. ``xatlas.Atlas.generate`` segments, parameterises and packs at the texel density xatlas estimates
     for ``resolution`` (padding in texels, ``bilinear`` so filtering never reads a neighbour chart,
     ``blockAlign`` so charts start on 4x4 blocks for BCn compression of the baked maps).
  3. The estimate rarely fills exactly one ``resolution`` x ``resolution`` atlas (on the 20K-face bunny it
     gives 356 x 352 texels; on spot 1088 x 1184), so the charts are re-packed, in texel units, as a
     UV mesh (``add_uv_mesh``; charts unchanged, only placed and rotated) at an explicit scale: shrunk by
     5 % until they fit one atlas, then grown by 6 % while they still do (<= 4 steps, ~0.1 s each).

Output conventions: xatlas's uv[:, 1] is the atlas row coordinate (its chart image puts texel row y at
uv_y * height), so glTF v (origin top-left, v down) = y / resolution and u = x / resolution: the texel
rasterised at (row r, col c) by ``rasterize_uv`` (centre ((c + .5) / size, (r + .5) / size)) is the
xatlas texel (x = c, y = r). Vertices are split at seams; ``meta["vmapping"]`` (int64 [V_out]) gives the
input vertex of each output vertex and carries normals and colours. Tangents, textures and material
tables refer to the old UVs and are dropped. Degenerate (zero-area) faces are kept; xatlas gives them
UV (0, 0) at all three corners, so they cover no texel (the baker's UV filter rejects them).

Limits: xatlas is serial C++ (the paper's partitioned parallel segmentation is not implemented here);
2-5 s for 20K faces on a shared 2-core CPU. Charts that cannot fit one atlas even at 1/100 of the
estimated density raise MeshError.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engine.errors import ConfigError, MeshError, MissingDependencyError
from engine.geometry.mesh import TriMesh, validate_mesh, vertex_normals
from engine.geometry.rasterize import rasterize_uv

_SHRINK, _GROW, _GROW_STEPS = 0.95, 1.06, 4


@dataclass(frozen=True)
class UvReport:
    """charts: number of charts; utilisation: share of the resolution^2 atlas texels whose centre is
    covered by a face (measured by rasterising the result); seconds: wall time of ``unwrap_uv``."""

    charts: int
    utilisation: float
    seconds: float


def welded_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit normals float32 [V, 3] computed on the mesh with coincident positions welded,
    so vertices duplicated at existing seams get identical (smooth) normals."""
    unique, inverse = np.unique(vertices, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return vertex_normals(unique, inverse[faces].astype(np.int32))[inverse]


def _pack_options(xatlas, resolution: int, padding: int, texels_per_unit: float = 0.0):
    po = xatlas.PackOptions()
    po.resolution = resolution
    po.padding = padding
    po.bilinear = True
    po.blockAlign = True
    po.texels_per_unit = texels_per_unit
    return po


def _repack(xatlas, texels: np.ndarray, faces: np.ndarray, resolution: int, padding: int, scale: float):
    """Pack the UV charts given in texel units into resolution^2 atlases at ``scale`` texels per texel."""
    atlas = xatlas.Atlas()
    atlas.add_uv_mesh(texels, faces)
    atlas.generate(xatlas.ChartOptions(), _pack_options(xatlas, resolution, padding, scale))
    return atlas


def _fit_one_atlas(xatlas, first, resolution: int, padding: int):
    """Re-pack ``first``'s charts into exactly one resolution^2 atlas at the largest scale tried.

    Returns (vmapping into first's vertices [V'], faces [F, 3], uv [V', 2] in texels, charts)."""
    _, faces1, uv1 = first[0]
    texels = np.ascontiguousarray(uv1 * np.array([first.width, first.height], np.float32), np.float32)
    scale = resolution / max(first.width, first.height)
    best, min_scale = None, scale / 100.0
    while best is None:
        atlas = _repack(xatlas, texels, faces1, resolution, padding, scale)
        if atlas.atlas_count == 1:
            best = atlas
        else:
            scale *= _SHRINK
            if scale < min_scale:
                raise MeshError("UV charts do not fit one atlas", "raise the resolution or simplify further")
    for _ in range(_GROW_STEPS):
        scale *= _GROW
        atlas = _repack(xatlas, texels, faces1, resolution, padding, scale)
        if atlas.atlas_count != 1:
            break
        best = atlas
    vmap, faces, uv = best[0]
    return vmap, faces, uv * np.array([best.width, best.height], np.float64), best.chart_count


def unwrap_uv(mesh: TriMesh, resolution: int = 1024, padding: int = 2) -> tuple[TriMesh, UvReport]:
    """UV-unwrap ``mesh`` into one ``resolution`` x ``resolution`` atlas with xatlas.

    mesh: TriMesh (float32 [V, 3], int32 [F, 3]); existing ``normals`` are kept, else smooth normals are
        computed before the seam split. resolution: atlas edge in texels (16..16384); padding: texels
        of gutter around each chart (0..64).
    Returns (mesh with split vertices: vertices/normals/colors gathered through ``meta["vmapping"]``,
    same faces in the same order re-indexed, ``uvs`` float32 [V', 2] glTF in [0, 1]; UvReport).
    """
    t0 = time.perf_counter()
    validate_mesh(mesh, "mesh to unwrap")
    if int(resolution) != resolution or not 16 <= resolution <= 16384:
        raise ConfigError(f"UV atlas resolution {resolution} out of range", "use an integer in [16, 16384]")
    if int(padding) != padding or not 0 <= padding <= 64:
        raise ConfigError(f"UV padding {padding} out of range", "use an integer in [0, 64] texels")
    try:
        import xatlas
    except ImportError:
        raise MissingDependencyError("xatlas", "geometry") from None
    normals = mesh.normals
    if normals is None:
        normals = welded_vertex_normals(mesh.vertices, mesh.faces)
    elif np.shape(normals) != (mesh.num_vertices, 3):
        raise MeshError(f"mesh normals have shape {np.shape(normals)}",
                        f"give normals of shape ({mesh.num_vertices}, 3) or none")

    first = xatlas.Atlas()
    first.add_mesh(mesh.vertices, mesh.faces.astype(np.uint32))
    first.generate(xatlas.ChartOptions(), _pack_options(xatlas, resolution, padding))
    if first.atlas_count < 1 or first.chart_count < 1:
        raise MeshError("xatlas produced no charts", "check the mesh has faces with non-zero area")
    vmap2, faces, texels, charts = _fit_one_atlas(xatlas, first, resolution, padding)
    vmapping = first[0][0].astype(np.int64)[vmap2]                  # [V'] input vertex per output vertex
    uvs = (texels / resolution).astype(np.float32)                  # [V', 2] glTF (u right, v down)
    out = TriMesh(
        mesh.vertices[vmapping], faces.astype(np.int32),
        normals=np.asarray(normals, np.float32)[vmapping], uvs=uvs,
        colors=None if mesh.colors is None else np.asarray(mesh.colors)[vmapping],
        meta={k: v for k, v in mesh.meta.items() if k not in ("materials", "face_material", "vmapping")},
    )
    out.meta["vmapping"] = vmapping
    face_id, _ = rasterize_uv(uvs, out.faces, resolution)
    utilisation = float((face_id >= 0).mean())
    return out, UvReport(int(charts), utilisation, time.perf_counter() - t0)
