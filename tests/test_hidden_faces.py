"""Hidden-face removal (engine.geometry.hidden_faces, hidden_faces_escape). The paper's flood fill (the
default, followed by the escape check of hidden_faces_verify: tests/test_hidden_faces_verify.py): nested
spheres, its recovery of what the views miss, bunny, attributes, odd inputs. Escape rays
(``HiddenFaceMethod.ESCAPE_RAYS``): every visible face of shapes with exactly known visibility (a cup, a box
with a small hole, a mouth, a hollow sphere with a window, a shell around hidden objects: tests/meshes.py)
is kept and every hidden one removed; decimated real assets keep every face a brute-force oracle proves
visible; the escape rays' recovery of what the views miss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import asset_path
from meshes import (
    box_with_hole,
    deep_cup,
    hollow_sphere_with_window,
    icosphere,
    mouth,
    shell_with_inner_object,
    welded_positions,
)

from engine.config import HiddenFaces
from engine.errors import ConfigError
from engine.geometry.hidden_faces import (
    HiddenFaceMethod,
    face_adjacency,
    fibonacci_sphere,
    find_visible_faces,
    ray_hit_counts,
    remove_hidden_faces,
)
from engine.geometry.hidden_faces_escape import edge_partners, hashed_uniforms, sample_rotations
from engine.geometry.hidden_faces_oracle import oracle_visible
from engine.geometry.mesh import TriMesh
from engine.geometry.simplify import simplify_qem
from engine.io.asset_load import load_mesh

ESCAPE = HiddenFaceMethod.ESCAPE_RAYS
SHAPES = {"cup": lambda: deep_cup(16), "box_with_hole": lambda: box_with_hole(0.5),
          "mouth": lambda: mouth(0.4), "hollow_sphere_with_window": lambda: hollow_sphere_with_window(16, 10),
          "shell_with_inner_object": shell_with_inner_object}


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
    assert rep.visible_by_rays + rep.added == rep.faces_out and rep.seconds > 0


def test_flood_fill_recovers_faces_rays_missed():
    mesh, n_outer = nested_spheres()
    out, rep = remove_hidden_faces(mesh, 12, 8)                          # 768 rays for 5120 outer faces
    assert rep.visible_by_rays < 0.2 * n_outer
    assert rep.added > 0.75 * n_outer
    assert rep.faces_out == n_outer                                      # still no inner face


def test_escape_rays_recover_faces_the_views_missed():
    mesh, n_outer = nested_spheres()
    out, rep = remove_hidden_faces(mesh, 12, 8, ESCAPE)                  # 768 rays for 5120 outer faces
    assert rep.visible_by_rays < 0.2 * n_outer
    assert rep.added > 0.8 * n_outer
    assert rep.faces_out == n_outer                                      # every outer face, no inner one


@pytest.mark.parametrize("name", list(SHAPES))
def test_known_shapes_keep_every_visible_face_and_drop_every_hidden_one(name):
    mesh, truth = SHAPES[name]()
    views_only = ray_hit_counts(mesh, 12, 32) > 0
    visible = find_visible_faces(mesh, 12, 32, ESCAPE)
    assert np.array_equal(visible, truth), (int((truth & ~visible).sum()), int((visible & ~truth).sum()))
    if name != "shell_with_inner_object":
        assert (truth & ~views_only).sum() > 0.05 * truth.sum()        # the views alone miss many


def test_escape_rays_hash_and_adjacency():
    rot = sample_rotations(np.array([0, 5, 5]), 4, 1)
    np.testing.assert_allclose(np.einsum("csij,cskj->csik", rot, rot), np.broadcast_to(np.eye(3), rot.shape),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
    np.testing.assert_array_equal(rot[1], rot[2])                       # a pure function of the face id
    assert not np.allclose(rot[0], rot[1])
    assert not np.allclose(rot, sample_rotations(np.array([0, 5, 5]), 4, 2))  # streams differ
    u = hashed_uniforms(np.arange(2000), (8,), 0)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    v, f = icosphere(2)
    partners = edge_partners(torch.from_numpy(f.astype(np.int64)), v.shape[0]).numpy()
    off, nb = face_adjacency(f)
    for i in range(f.shape[0]):
        assert sorted(partners[i]) == sorted(nb[off[i]:off[i + 1]])
    fan = torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4], [2, 1, 5]])         # edge (0, 1) in 3 faces
    p = edge_partners(fan, 6).numpy()
    assert {p[0, 0], p[1, 0], p[2, 0]} == {0, 1, 2} and p[0, 0] != 0 and p[3, 1] == -1


@pytest.mark.parametrize("method", [HiddenFaceMethod.FLOOD_FILL, ESCAPE])
@pytest.mark.parametrize("name", ["suzanne", "milktruck", "sofa"])
def test_decimated_assets_keep_every_face_the_oracle_sees(shared_dir, name, method):
    mesh, _ = simplify_qem(load_mesh(asset_path(name)), 1500)
    visible = find_visible_faces(mesh, 24, 64, method)                  # with the escape check (default)
    removed = np.flatnonzero(~visible)
    assert removed.size > 0 or method is HiddenFaceMethod.FLOOD_FILL   # the asset has hidden faces
    seen = oracle_visible(mesh, removed, points=8, directions=1024, seed=1)
    assert not seen.any(), f"{int(seen.sum())} of {removed.size} removed faces are visible"


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
    assert rep.added > 0


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
    with pytest.raises(ConfigError, match="escape direction"):
        find_visible_faces(mesh, 8, 16, directions=0)


@pytest.mark.parametrize("method", list(HiddenFaces))
def test_stage_runs_the_configured_method(method):
    from dataclasses import replace

    from engine.config import GeometryConfig
    from engine.runtime.backends import reference_backends
    from engine.stages.geometry import hidden_faces

    mesh, n_outer = nested_spheres()
    geometry = replace(GeometryConfig(), visibility_views=12, visibility_resolution=16, hidden_faces=method)
    out = hidden_faces(mesh, geometry=geometry, backends=reference_backends())
    assert out["visible"].num_faces == n_outer
    assert f"then {method.value.replace('_', ' ')}, then the escape check: " in out["_note"]
