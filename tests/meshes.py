"""Small analytic meshes shared by the tests, and a real-asset loader that welds positions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.geometry.mesh import clean_mesh
from engine.io.asset_load import load_mesh


def icosphere(subdiv: int, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Icosphere, CCW outward faces: float32 [V, 3], int32 [F, 3] (20 * 4^subdiv faces)."""
    t = (1 + 5**0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
         [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]  # fmt: skip
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
         [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]  # fmt: skip
    verts = [np.array(p, float) / np.linalg.norm(p) for p in v]
    for _ in range(subdiv):
        mid: dict = {}
        new = []
        for a, b, c in f:
            m = []
            for i, j in ((a, b), (b, c), (c, a)):
                key = (min(i, j), max(i, j))
                if key not in mid:
                    p = verts[i] + verts[j]
                    verts.append(p / np.linalg.norm(p))
                    mid[key] = len(verts) - 1
                m.append(mid[key])
            new += [[a, m[0], m[2]], [b, m[1], m[0]], [c, m[2], m[1]], m]
        f = new
    return (np.array(verts) * radius).astype(np.float32), np.array(f, np.int32)


def welded_positions(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A real asset's geometry only: positions welded across UV seams, degenerate faces dropped."""
    mesh = clean_mesh(load_mesh(path))
    return mesh.vertices, mesh.faces


def check_unwrap_contract(mesh, out, report, size: int) -> np.ndarray:
    """The contract every UV unwrapper keeps (``unwrap_uv``'s): split vertices gathered through
    ``meta["vmapping"]``, same faces in the same order, float32 UVs inside [0, 1], normals fixed before
    the seam split, no texel shared by two charts, the reported utilisation. Returns the rasterised face
    id per texel (int [size, size], -1 empty) for the caller's own checks."""
    import pytest

    from engine.geometry.rasterize import rasterize_uv
    from engine.geometry.uv_quality import overlap_texels

    vmap = out.meta["vmapping"]
    assert vmap.dtype == np.int64 and out.num_faces == mesh.num_faces
    np.testing.assert_array_equal(out.vertices, mesh.vertices[vmap])       # positions unchanged
    np.testing.assert_array_equal(vmap[out.faces], mesh.faces)             # same faces, same order
    assert out.uvs.dtype == np.float32 and out.uvs.shape == (out.num_vertices, 2)
    assert out.uvs.min() >= 0.0 and out.uvs.max() <= 1.0                 # every face inside the atlas
    first = np.full(mesh.num_vertices, -1)
    first[vmap[::-1]] = np.arange(vmap.size)[::-1]
    np.testing.assert_array_equal(out.normals, out.normals[first[vmap]])  # normals fixed before seams
    assert overlap_texels(out.uvs, out.faces, size) == 0                  # between charts
    fid, _ = rasterize_uv(out.uvs, out.faces, size)
    assert report.utilisation == pytest.approx((fid >= 0).mean())
    return fid


def torus(n_major: int = 24, n_minor: int = 12, major: float = 1.0, minor: float = 0.35
          ) -> tuple[np.ndarray, np.ndarray]:
    """Closed CCW (outward) torus around +Y, genus 1: float32 [n_major n_minor, 3], int32
    [2 n_major n_minor, 3]."""
    i, j = np.meshgrid(np.arange(n_major), np.arange(n_minor), indexing="ij")
    u, w = 2 * np.pi * i / n_major, 2 * np.pi * j / n_minor
    r = major + minor * np.cos(w)
    v = np.stack([r * np.cos(u), minor * np.sin(w), r * np.sin(u)], -1).reshape(-1, 3)
    a = (i * n_minor + j).reshape(-1)
    b = (((i + 1) % n_major) * n_minor + j).reshape(-1)
    c = (i * n_minor + (j + 1) % n_minor).reshape(-1)
    d = (((i + 1) % n_major) * n_minor + (j + 1) % n_minor).reshape(-1)
    faces = np.concatenate([np.stack([a, c, d], 1), np.stack([a, d, b], 1)])
    return v.astype(np.float32), faces.astype(np.int32)
