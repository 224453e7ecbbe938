"""The UV layout picture: the atlas inside the charts, the charts' triangles and outlines, a grid outside.

Texel (r, c) of a ``size`` x ``size`` layout has its centre at u = (c + 0.5) / size, v = (r + 0.5) / size
(glTF UVs, origin top-left), the convention of ``rasterize_uv``, which decides coverage: a texel belongs to
a chart exactly when ``rasterize_uv`` gives it a face. Covered texels show the base-colour atlas (box
filtered to ``size`` when the atlas is larger, nearest-neighbour when smaller); texels within
``EDGE_WIDTH`` of a triangle edge are lightened, and texels on a chart's outline (a 4-neighbour outside the
chart) take the chart's colour. Uncovered texels show a checkerboard with grid lines every eighth of the
atlas: nothing is drawn outside the charts, so the picture shows the atlas utilisation as it is.

Charts are the connected components of the faces through shared vertex indices (the unwrappers split
vertices along seams, so two charts never share a vertex).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from engine.errors import MeshError
from engine.geometry.mesh import TriMesh
from engine.geometry.rasterize import rasterize_uv

EDGE_WIDTH = 0.55            # texels: half width of a triangle edge line
EDGE_LIGHTEN = 0.3           # blend of triangle edges towards white
CHECKER = (38, 42, 50), (48, 53, 62)
GRID = (84, 92, 108)


def chart_ids(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """Chart index int32 [F] of each face: connected components through shared vertices, numbered in
    order of their first face."""
    f = np.asarray(faces, np.int64)
    rows = np.concatenate([f[:, 0], f[:, 1]])
    cols = np.concatenate([f[:, 1], f[:, 2]])
    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(num_vertices, num_vertices))
    _, label = connected_components(graph, directed=False)
    per_face = label[f[:, 0]]
    _, first, inverse = np.unique(per_face, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))                 # renumber by first appearance
    return order[inverse.reshape(-1)].astype(np.int32)


def background(size: int) -> np.ndarray:
    """The pattern of uncovered texels: uint8 [size, size, 3] checkerboard (cells of size / 32) with grid
    lines every size / 8 texels."""
    cell = max(size // 32, 1)
    idx = np.arange(size)
    checker = ((idx[:, None] // cell + idx[None, :] // cell) % 2).astype(bool)
    out = np.where(checker[..., None], np.array(CHECKER[1], np.uint8), np.array(CHECKER[0], np.uint8))
    step = max(size // 8, 1)
    line = idx % step == 0
    out[line, :] = GRID
    out[:, line] = GRID
    return out


def _atlas_at(atlas: np.ndarray | None, size: int) -> np.ndarray:
    """The base-colour atlas resampled to [size, size, 3] uint8 (mid grey without one)."""
    if atlas is None:
        return np.full((size, size, 3), 160, np.uint8)
    h, w = atlas.shape[:2]
    if h >= size and w >= size and h % size == 0 and w % size == 0:
        fy, fx = h // size, w // size
        boxed = atlas[..., :3].reshape(size, fy, size, fx, 3).astype(np.float32).mean(axis=(1, 3))
        return np.round(boxed).astype(np.uint8)
    rows = np.minimum((np.arange(size) + 0.5) * h / size, h - 1).astype(np.int64)
    cols = np.minimum((np.arange(size) + 0.5) * w / size, w - 1).astype(np.int64)
    return atlas[rows][:, cols, :3]


def chart_colours(count: int) -> np.ndarray:
    """Distinct saturated colours uint8 [count, 3] (hues by the golden ratio)."""
    hue = (np.arange(count) * 0.618034) % 1.0
    k = (np.array([5.0, 3.0, 1.0])[None, :] + hue[:, None] * 6.0) % 6.0
    rgb = 1.0 - 0.8 * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)   # HSV with s = 0.8, v = 1
    return np.round(rgb * 255).astype(np.uint8)


def layout_size(mesh: TriMesh, largest: int) -> int:
    """The layout's edge: the atlas edge, at most ``largest`` (512 without an atlas)."""
    edge = mesh.base_color.shape[0] if mesh.base_color is not None else 512
    return int(min(edge, largest))


def uv_layout(mesh: TriMesh, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The layout picture uint8 [size, size, 3] and the chart coverage bool [size, size] (module
    docstring). MeshError when the mesh has no UVs."""
    if mesh.uvs is None:
        raise MeshError("the asset has no UVs to draw", "unwrap the mesh before drawing its UV layout")
    fid, bary = rasterize_uv(mesh.uvs, mesh.faces, size)
    covered = fid >= 0
    out = background(size)
    out[covered] = _atlas_at(mesh.base_color, size)[covered]
    # triangle edges: distance to the nearest edge of the texel's face, in texels
    tri = mesh.uvs.astype(np.float64)[mesh.faces] * size                         # [F, 3, 2]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area2 = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    opposite = np.stack([np.linalg.norm(tri[:, (i + 2) % 3] - tri[:, (i + 1) % 3], axis=1)
                         for i in range(3)], axis=1)
    dist = (bary[covered] * (area2[:, None] / np.maximum(opposite, 1e-12))[fid[covered]]).min(axis=1)
    near = np.zeros_like(covered)
    near[covered] = dist < EDGE_WIDTH
    out[near] = np.round(out[near] * (1 - EDGE_LIGHTEN) + 255 * EDGE_LIGHTEN).astype(np.uint8)
    # chart outlines: covered texels with a 4-neighbour in another chart or uncovered
    chart = np.full((size, size), -1, np.int64)
    charts = chart_ids(mesh.faces, mesh.num_vertices)
    chart[covered] = charts[fid[covered]]
    padded = np.pad(chart, 1, constant_values=-1)
    outline = covered & ((padded[:-2, 1:-1] != chart) | (padded[2:, 1:-1] != chart)
                         | (padded[1:-1, :-2] != chart) | (padded[1:-1, 2:] != chart))
    out[outline] = chart_colours(int(charts.max()) + 1)[chart[outline]]
    return out, covered
