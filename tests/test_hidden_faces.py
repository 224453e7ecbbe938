"""Hidden-face removal (engine.geometry.hidden_faces): nested spheres, flood fill, bunny, attributes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asset_path
from meshes import icosphere, welded_positions

from engine.errors import ConfigError
from engine.geometry.hidden_faces import (
    face_adjacency,
    fibonacci_sphere,
    find_visible_faces,
    remove_hidden_faces,
)
from engine.geometry.mesh import TriMesh


def nested_spheres() -> tuple[TriMesh, int]:
    """Outer unit icosphere (5120 faces) around a sealed inner shell of radius 0.5 -> (mesh, F_outer)."""
    v, f = icosphere(4)
    vi, fi = icosphere(3, 0.5)
    return TriMesh(np.concatenate([v, vi]), np.concatenate([f, fi + v.shape[0]])), f.shape[0]


def test_fibonacci_directions_are_unit_and_balanced():
    d = fibonacci_sphere(96)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    assert np.abs(d.mean(axis=0)).max() < 0.02


def test_face_adjacency_tetrahedron_and_nonmanifold_edge():
    tet = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [2, 0, 3]], np.int32)
    off, nb = face_adjacency(tet)
    for f in range(4):
        assert sorted(nb[off[f]:off[f + 1]]) == [g for g in range(4) if g != f]
    fan = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]], np.int32)          # three faces on edge (0, 1)
    off, nb = face_adjacency(fan)
    assert [sorted(nb[off[f]:off[f + 1]]) for f in range(3)] == [[1, 2], [0, 2], [0, 1]]


def test_inner_shell_removed_outer_kept():
    mesh, n_outer = nested_spheres()
    out, rep = remove_hidden_faces(mesh, 24, 64)
    visible = find_visible_faces(mesh, 24, 64)
    assert not visible[n_outer:].any()                                   # every inner face removed
    assert visible[:n_outer].mean() >= 0.99                              # recall of the visible shell
    assert rep.faces_in == mesh.num_faces and rep.faces_out == out.num_faces == visible.sum()
    assert out.num_vertices == np.unique(mesh.faces[:n_outer]).size       # inner vertices dropped
    assert rep.visible_by_rays + rep.added_by_flood_fill == rep.faces_out and rep.seconds > 0


def test_flood_fill_recovers_faces_rays_missed():
    mesh, n_outer = nested_spheres()
    out, rep = remove_hidden_faces(mesh, 12, 8)                          # 768 rays for 5120 outer faces
    assert rep.visible_by_rays < 0.2 * n_outer
    assert rep.added_by_flood_fill > 0.75 * n_outer
    assert rep.faces_out == n_outer                                      # still no inner face


def test_attributes_follow_vertices():
    mesh, n_outer = nested_spheres()
    rng = np.random.default_rng(0)
    mesh.uvs = rng.random((mesh.num_vertices, 2)).astype(np.float32)
    mesh.colors = rng.random((mesh.num_vertices, 3)).astype(np.float32)
    mesh.base_color = np.zeros((4, 4, 3), np.uint8)
    mesh.meta["face_material"] = np.arange(mesh.num_faces, dtype=np.int32) % 3
    out, _ = remove_hidden_faces(mesh, 24, 64)
    assert out.num_faces == n_outer
    np.testing.assert_array_equal(out.meta["face_material"], mesh.meta["face_material"][:n_outer])
    # Same corner positions <-> same UVs / colours as in the input.
    old_corner = mesh.faces[:n_outer].reshape(-1)
    new_corner = out.faces.reshape(-1)
    np.testing.assert_array_equal(out.vertices[new_corner], mesh.vertices[old_corner])
    np.testing.assert_array_equal(out.uvs[new_corner], mesh.uvs[old_corner])
    np.testing.assert_array_equal(out.colors[new_corner], mesh.colors[old_corner])
    assert out.base_color is mesh.base_color and out.normals is None


def test_bunny_keeps_nearly_all_faces(shared_dir):
    v, f = welded_positions(asset_path("bunny"))
    out, rep = remove_hidden_faces(TriMesh(v, f), 48, 128)
    assert rep.faces_out >= 0.995 * rep.faces_in
    assert rep.added_by_flood_fill > 0


def test_degenerate_mesh_kept_and_reported():
    v = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], np.float32)    # collinear: zero area
    mesh = TriMesh(v, np.array([[0, 1, 2], [1, 2, 3]], np.int32))
    out, rep = remove_hidden_faces(mesh, 6, 16)
    assert out is mesh and rep.faces_out == 2 and rep.visible_by_rays == 0 and "no face" in rep.note


def test_bad_arguments():
    mesh, _ = nested_spheres()
    with pytest.raises(ConfigError):
        remove_hidden_faces(mesh, 0, 64)
    with pytest.raises(ConfigError):
        find_visible_faces(mesh, 8, 1)
