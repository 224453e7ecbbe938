"""Metrics (engine.metrics) against analytic values: spheres, boxes, reversed winding, bunny."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asset_path
from meshes import icosphere, welded_positions

from engine.errors import ConfigError, MeshError
from engine.geometry.mesh import TriMesh
from engine.metrics import (
    chamfer_hausdorff,
    flipped_normal_pixels,
    inside_mesh,
    normal_angular_error,
    sample_surface,
    volumetric_iou,
)

BOX_FACES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],
                      [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], np.int32)


def box(lo, hi) -> TriMesh:
    v = [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    return TriMesh(np.array(v, np.float32), BOX_FACES)


@pytest.fixture(scope="module")
def sphere() -> TriMesh:
    v, f = icosphere(4)
    return TriMesh(v, f)


def test_sample_surface_is_area_uniform_and_on_faces():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 0, 0], [3, 0, 2], [0, 0, 3]], np.float32)
    mesh = TriMesh(v, np.array([[0, 1, 2], [0, 3, 5]], np.int32))           # areas 0.5 and 4.5
    pts, fid, bary = sample_surface(mesh, 20_000, seed=3)
    assert pts.shape == (20_000, 3) and fid.dtype == np.int32 and bary.dtype == np.float32
    assert abs((fid == 0).mean() - 0.1) < 0.01
    np.testing.assert_allclose(np.einsum("nk,nkc->nc", bary, v[mesh.faces[fid]]), pts, atol=1e-6)
    assert (bary >= 0).all() and np.allclose(bary.sum(1), 1, atol=1e-6)
    # Uniform inside a triangle: the mean is the centroid.
    np.testing.assert_allclose(pts[fid == 1].mean(0), v[[0, 3, 5]].mean(0), atol=0.03)
    np.testing.assert_array_equal(sample_surface(mesh, 50, seed=1)[0], sample_surface(mesh, 50, seed=1)[0])


def test_chamfer_hausdorff_spheres(sphere):
    bigger = TriMesh(sphere.vertices * 1.05, sphere.faces)
    chamfer, hausdorff = chamfer_hausdorff(sphere, bigger, n=20_000)
    # Reference box side 2 -> scale 0.5: radius gap 0.05 becomes 0.025 (facets add < 1e-3 either way).
    assert abs(chamfer - 0.025) < 1e-3 and abs(hausdorff - 0.025) < 1.5e-3 and hausdorff >= chamfer
    same_c, same_h = chamfer_hausdorff(sphere, sphere, n=20_000)
    assert same_c < 1e-6 and same_h < 1e-6
    # Normalisation uses the reference box only: scaling both meshes changes nothing.
    c2, h2 = chamfer_hausdorff(TriMesh(sphere.vertices * 7, sphere.faces),
                               TriMesh(bigger.vertices * 7, bigger.faces), n=20_000)
    assert abs(c2 - chamfer) < 1e-5 and abs(h2 - hausdorff) < 1e-5


def test_normal_angular_error(sphere):
    assert normal_angular_error(sphere, sphere, n=5_000) < 0.05             # edge ties only
    flipped = TriMesh(sphere.vertices, sphere.faces[:, ::-1])
    assert normal_angular_error(sphere, flipped, n=5_000) > 179.0
    coarse_v, coarse_f = icosphere(2)
    err = normal_angular_error(sphere, TriMesh(coarse_v, coarse_f), n=5_000)
    assert 1.0 < err < 10.0                                                 # faceting of a coarser sphere


def test_flipped_normal_pixels_sphere_and_box(sphere):
    assert flipped_normal_pixels(sphere, views=6, resolution=64) == 0
    reversed_sphere = TriMesh(sphere.vertices, sphere.faces[:, ::-1])
    disc = np.pi / 4 * 64 * 64 * 6                                          # sphere covers pi/4 of each view
    assert abs(flipped_normal_pixels(reversed_sphere, views=6, resolution=64) - disc) < 0.02 * disc
    cube = box((0, 0, 0), (1, 1, 1))
    assert flipped_normal_pixels(cube, views=8, resolution=48) == 0
    half = cube.copy(faces=np.concatenate([cube.faces[:6], cube.faces[6:, ::-1]]))
    assert flipped_normal_pixels(half, views=8, resolution=48) > 0


def test_flipped_normal_pixels_bunny(shared_dir):
    v, f = welded_positions(asset_path("bunny"))
    ok = flipped_normal_pixels(TriMesh(v, f), views=8, resolution=96)
    bad = flipped_normal_pixels(TriMesh(v, f[:, ::-1]), views=8, resolution=96)
    assert bad > 20 * max(ok, 1)                         # only holes in the scan show back faces


def test_inside_and_volumetric_iou_boxes():
    a = box((0, 0, 0), (1, 1, 1))
    pts = np.array([[0.5, 0.5, 0.5], [0.01, 0.99, 0.5], [1.5, 0.5, 0.5], [-0.1, 0.2, 0.3], [0.5, 0.5, 1.01]])
    np.testing.assert_array_equal(inside_mesh(a, pts), [True, True, False, False, False])
    b = box((0.5, 0.25, 0), (1.5, 1.25, 1))
    expected = (0.5 * 0.75) / (2 - 0.5 * 0.75)
    assert abs(volumetric_iou(a, b, n=40_000) - expected) < 0.01
    assert volumetric_iou(a, a, n=5_000) == 1.0
    assert volumetric_iou(a, box((2, 2, 2), (3, 3, 3)), n=5_000) == 0.0


def test_iou_sphere_vs_analytic(sphere):
    small = TriMesh(sphere.vertices * 0.8, sphere.faces)
    # Nested: IoU = (0.8)^3 up to the icosphere's volume deficit (same shape, so it cancels).
    assert abs(volumetric_iou(sphere, small, n=40_000) - 0.512) < 0.012


def test_bad_inputs(sphere):
    with pytest.raises(ConfigError):
        sample_surface(sphere, 0)
    with pytest.raises(ConfigError):
        flipped_normal_pixels(sphere, views=0)
    flat = TriMesh(np.zeros((3, 3), np.float32), np.array([[0, 1, 2]], np.int32))
    with pytest.raises(MeshError):
        sample_surface(flat, 10)
    with pytest.raises(MeshError):
        chamfer_hausdorff(flat, sphere, n=10)
