"""xatlas UV unwrap: split vertices carry attributes, UVs in [0, 1], charts never overlap, real assets."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asset_path
from meshes import icosphere
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from engine.errors import ConfigError, MeshError
from engine.geometry.mesh import TriMesh, clean_mesh
from engine.geometry.rasterize import rasterize_uv
from engine.geometry.uv_unwrap import unwrap_uv


def uv_charts(mesh: TriMesh) -> np.ndarray:
    """Chart id per face [F]: connected components of faces sharing an output (split) vertex."""
    f = mesh.faces
    rows = np.repeat(np.arange(f.shape[0]), 3)
    graph = coo_matrix((np.ones(rows.size), (rows, f.reshape(-1) + f.shape[0])),
                       shape=(f.shape[0] + mesh.num_vertices,) * 2)
    _, labels = connected_components(graph, directed=False)
    return labels[: f.shape[0]]


def overlapping_texels(mesh: TriMesh, size: int) -> int:
    """Texels whose centre lies inside (edges inclusive) faces of two different charts."""
    charts = uv_charts(mesh)
    owner = np.full((size, size), -1, np.int64)
    clash = np.zeros((size, size), bool)
    tex = mesh.uvs.astype(np.float64) * size - 0.5                       # texel-centre coordinates
    for tri, chart in zip(mesh.faces, charts):
        p = tex[tri]
        lo = np.clip(np.ceil(p.min(0)).astype(int), 0, size - 1)
        hi = np.clip(np.floor(p.max(0)).astype(int), 0, size - 1)
        if (hi < lo).any():
            continue
        x, y = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
        e = [(p[(k + 1) % 3, 0] - p[k, 0]) * (y - p[k, 1]) - (p[(k + 1) % 3, 1] - p[k, 1]) * (x - p[k, 0])
             for k in range(3)]
        inside = ((e[0] >= 0) & (e[1] >= 0) & (e[2] >= 0)) | ((e[0] <= 0) & (e[1] <= 0) & (e[2] <= 0))
        ys, xs = y[inside], x[inside]
        prev = owner[ys, xs]
        clash[ys[(prev >= 0) & (prev != chart)], xs[(prev >= 0) & (prev != chart)]] = True
        owner[ys, xs] = chart
    return int(clash.sum())


def check_unwrap(mesh: TriMesh, out: TriMesh, report, size: int) -> None:
    vmap = out.meta["vmapping"]
    assert out.num_faces == mesh.num_faces
    np.testing.assert_array_equal(out.vertices, mesh.vertices[vmap])
    np.testing.assert_array_equal(vmap[out.faces], mesh.faces)             # same faces, same order
    assert out.uvs.dtype == np.float32 and out.uvs.shape == (out.num_vertices, 2)
    assert out.uvs.min() >= 0.0 and out.uvs.max() <= 1.0
    assert out.num_vertices > mesh.num_vertices                          # seams split vertices
    # normals depend only on the original vertex: seams do not change shading
    first = np.full(mesh.num_vertices, -1)
    first[vmap[::-1]] = np.arange(vmap.size)[::-1]
    np.testing.assert_array_equal(out.normals, out.normals[first[vmap]])
    assert overlapping_texels(out, size) == 0
    fid, _ = rasterize_uv(out.uvs, out.faces, size)
    assert report.utilisation == pytest.approx((fid >= 0).mean())
    assert report.charts == len(np.unique(uv_charts(out)))
    assert report.seconds > 0


def test_icosphere_unwrap_is_valid():
    mesh = TriMesh(*icosphere(2))
    out, report = unwrap_uv(mesh, resolution=256, padding=2)
    check_unwrap(mesh, out, report, 256)
    assert report.charts >= 2 and report.utilisation > 0.3
    # smooth normals were computed before the split: radial on a sphere
    assert np.einsum("ij,ij->i", out.normals, out.vertices).min() > 0.99
    # the overlap check can fail: move chart 1 onto chart 0
    charts = uv_charts(out)
    v0, v1 = np.unique(out.faces[charts == charts[0]]), np.unique(out.faces[charts != charts[0]])
    moved = out.uvs.copy()
    moved[v1] += out.uvs[v0].mean(0) - out.uvs[v1].mean(0)
    assert overlapping_texels(out.copy(uvs=moved), 256) > 0


def test_existing_normals_and_colours_are_carried():
    mesh = TriMesh(*icosphere(1))
    mesh.normals = -mesh.vertices                                          # deliberately inward
    mesh.colors = np.abs(mesh.vertices)
    out, _ = unwrap_uv(mesh, resolution=64, padding=1)
    vmap = out.meta["vmapping"]
    np.testing.assert_array_equal(out.normals, mesh.normals[vmap])
    np.testing.assert_array_equal(out.colors, mesh.colors[vmap])


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(MeshError, match="no faces"):
        unwrap_uv(TriMesh(np.zeros((3, 3)), np.zeros((0, 3))))
    with pytest.raises(ConfigError, match="resolution"):
        unwrap_uv(TriMesh(*icosphere(0)), resolution=8)
    with pytest.raises(ConfigError, match="padding"):
        unwrap_uv(TriMesh(*icosphere(0)), padding=-1)
    with pytest.raises(MeshError, match="normals"):
        unwrap_uv(TriMesh(*icosphere(0)).copy(normals=np.zeros((2, 3))))


@pytest.mark.parametrize("name", ["spot", "suzanne"])
def test_real_assets_unwrap_without_overlap(shared_dir, name):
    from engine.io.asset_load import load_mesh

    mesh = clean_mesh(load_mesh(asset_path(name)))                        # geometry only, welded
    out, report = unwrap_uv(mesh, resolution=1024, padding=2)
    check_unwrap(mesh, out, report, 1024)
    assert report.utilisation > 0.4
