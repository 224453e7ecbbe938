"""The escape check before removal (engine.geometry.hidden_faces_verify, issue 14.4 "visible faces stay"):
with the default method every visible face of the shapes with exactly known visibility is kept, a face
seen only through a narrow opening is kept, the check proves no hidden face visible, and it is
deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from meshes import (
    box_with_hole,
    deep_cup,
    hollow_sphere_with_window,
    icosphere,
    mouth,
    shell_with_inner_object,
    tunnel_box,
)

from engine.geometry.bvh import build_bvh
from engine.geometry.hidden_faces import (
    HiddenFaceMethod,
    bounding_sphere,
    find_visible_faces,
    ray_hit_counts,
    remove_hidden_faces,
)
from engine.geometry.hidden_faces_verify import contour_edges, keep_provable, prove_visible
from engine.geometry.mesh import TriMesh

SHAPES = {"cup": lambda: deep_cup(16), "box_with_hole": lambda: box_with_hole(0.5),
          "mouth": lambda: mouth(0.4), "hollow_sphere_with_window": lambda: hollow_sphere_with_window(16, 10),
          "shell_with_inner_object": shell_with_inner_object}


def narrow_hole_box() -> tuple[TriMesh, np.ndarray]:
    """A 2 x 2 x 2 box with 0.1-thick walls and a 0.06 x 0.06 hole in its top: the middle of the cavity
    floor is seen through the hole, each of its faces from a cone of ~1e-3 sr only."""
    return tunnel_box(([-1, -1, -1], [1, 1, 1]), ([-0.9, -0.9, -0.9], [0.9, 0.9, 0.9]), 1,
                      [-0.03, 0, -0.03], [0.03, 0, 0.03], 0.6)


@pytest.mark.parametrize("name", list(SHAPES))
def test_default_method_keeps_every_visible_face_of_known_shapes(name):
    mesh, truth = SHAPES[name]()
    visible = find_visible_faces(mesh, 12, 32)                           # the default: flood fill + check
    assert not (truth & ~visible).any(), f"{int((truth & ~visible).sum())} visible faces removed"
    assert (truth & visible).sum() / truth.sum() == 1.0


def test_face_seen_through_a_narrow_opening_is_kept():
    mesh, truth = narrow_hole_box()
    views = ray_hit_counts(mesh, 12, 32) > 0
    paper = find_visible_faces(mesh, 12, 32, verify=False)
    assert (truth & ~views).sum() > 0 and (truth & ~paper).sum() > 0   # the views and the fill miss some
    out, rep = remove_hidden_faces(mesh, 12, 32)
    kept = find_visible_faces(mesh, 12, 32)
    assert not (truth & ~kept).any()                                     # every visible face stays
    assert rep.verified == int((kept & ~paper).sum()) > 0
    assert not (kept & ~paper & ~truth).any()                           # the check keeps no hidden face
    assert np.array_equal(find_visible_faces(mesh, 12, 32, HiddenFaceMethod.ESCAPE_RAYS), truth)


def test_check_proves_no_sealed_face_visible():
    mesh, truth = shell_with_inner_object()
    bvh = build_bvh(mesh.vertices, mesh.faces)
    inner = np.flatnonzero(~truth)
    assert not prove_visible(mesh, bvh, inner, bounding_sphere(mesh)[1]).any()
    kept, added = keep_provable(mesh, truth.copy(), bvh)
    assert added == 0 and np.array_equal(kept, truth)


def test_check_is_deterministic_and_proves_the_outside():
    mesh, truth = narrow_hole_box()
    bvh = build_bvh(mesh.vertices, mesh.faces)
    faces = np.arange(mesh.num_faces)
    radius = bounding_sphere(mesh)[1]
    first = prove_visible(mesh, bvh, faces, radius)
    np.testing.assert_array_equal(first, prove_visible(mesh, bvh, faces, radius))
    np.testing.assert_array_equal(first > 0, truth)                      # proofs exactly where visible
    assert (first == 2).any()                                            # some only by a contour edge


def test_contour_edges_weld_seams_and_find_boundaries():
    v, f = icosphere(1)
    wv, a, b, c0, c1 = contour_edges(v.astype(np.float64), f)
    assert a.size == f.shape[0] * 3 // 2 and (c1 >= 0).all()             # closed: no boundary edge
    split = np.concatenate([v, v[:3]])                                   # a seam: three duplicated corners
    f2 = f.copy()
    f2[0] = [v.shape[0] + k if f[0, k] < 3 else f[0, k] for k in range(3)]
    _, a2, _, _, c12 = contour_edges(split.astype(np.float64), f2)
    assert a2.size == a.size and (c12 >= 0).all()
    _, a3, _, _, c13 = contour_edges(v.astype(np.float64), f[1:])        # one face removed: a hole
    assert (c13 < 0).sum() == 3
