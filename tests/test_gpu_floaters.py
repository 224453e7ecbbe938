"""GPU floater removal (engine/geometry/floaters_gpu.py): component labels equal scipy's, the same faces
and vertices as the CPU ``remove_floaters`` on host and device meshes, the largest piece always kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_floaters import concat, moved
from test_simplify import uv_sphere

from engine.errors import ConfigError
from engine.geometry.device_mesh import DeviceMesh
from engine.geometry.floaters import component_labels, remove_floaters
from engine.geometry.floaters_gpu import component_labels_device, remove_floaters_gpu
from engine.geometry.mesh import TriMesh
from triton_kernels.numba_cuda import kernel_device


def debris_scene() -> TriMesh:
    """A sphere, a mid-size sphere (kept), a tiny blob (dropped) and a lone bow-tie pair of triangles."""
    pair = TriMesh(np.array([[0, 0, 0], [0.01, 0, 0], [0, 0.01, 0], [-0.01, 0, 0], [0, -0.01, 0]],
                            np.float32) + np.float32(5.0), np.array([[0, 1, 2], [0, 3, 4]], np.int32))
    return concat(moved(uv_sphere(6), 0.3, [-3, 0, 0]), uv_sphere(10), moved(uv_sphere(4), 0.05, [3, 0, 0]),
                  pair)


def test_labels_match_scipy_components():
    m = debris_scene()
    faces = torch.from_numpy(m.faces).to(kernel_device())
    n, label = component_labels_device(faces, m.num_vertices)
    n_ref, ref = component_labels(m.num_vertices, m.faces)
    _, ref_dense = np.unique(ref, return_inverse=True)
    assert n == 4 and n_ref == 4
    np.testing.assert_array_equal(label.cpu().numpy(), ref_dense)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.2])
def test_same_result_as_cpu_on_host_and_device(fraction):
    m = debris_scene()
    ref, removed_ref = remove_floaters(m, fraction)
    out, removed = remove_floaters_gpu(m, fraction)
    assert removed == removed_ref
    np.testing.assert_array_equal(out.faces, ref.faces)
    np.testing.assert_array_equal(out.vertices, ref.vertices)
    dm = DeviceMesh.from_trimesh(m, kernel_device())
    out_d, removed_d = remove_floaters_gpu(dm, fraction)
    assert isinstance(out_d, DeviceMesh) and removed_d == removed_ref
    np.testing.assert_array_equal(out_d.faces.cpu().numpy(), ref.faces)
    np.testing.assert_array_equal(out_d.vertices.cpu().numpy(), ref.vertices)


def test_largest_kept_when_no_piece_reaches_the_fraction_and_bad_fraction():
    pieces = concat(*(moved(uv_sphere(4), 1.0 - 0.1 * i, [3.0 * i, 0, 0]) for i in range(3)))
    out, removed = remove_floaters_gpu(pieces, 0.9)
    assert removed == 2 and out.num_faces == uv_sphere(4).num_faces
    with pytest.raises(ConfigError, match="fraction"):
        remove_floaters_gpu(pieces, 1.0)
