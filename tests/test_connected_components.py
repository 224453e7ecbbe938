"""Union-find connected components (triton_kernels/connected_components.py) against scipy, in the CUDA
simulator in CI: mesh vertex roots on deep shuffled strips, lattice components with sizes and border flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.geometry.floaters import component_labels
from triton_kernels.connected_components import (
    grid_components,
    grid_components_ref,
    mesh_vertex_roots,
    mesh_vertex_roots_ref,
)
from triton_kernels.numba_cuda import kernel_device


def _shuffled_strips(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Three long triangle strips with shuffled vertex ids (deep union-find trees) and 5 lone vertices."""
    faces, base = [], 0
    for n in (300, 200, 150):                                    # strip of n faces over n + 2 vertices
        i = np.arange(n)
        faces.append(base + np.stack([i, i + 1, i + 2], axis=1))
        base += n + 2
    perm = rng.permutation(base + 5)
    f = perm[np.concatenate(faces)].astype(np.int32)
    return f[rng.permutation(f.shape[0])], base + 5


def test_mesh_roots_match_scipy_on_shuffled_strips():
    f, nv = _shuffled_strips(np.random.default_rng(3))
    roots = mesh_vertex_roots(torch.from_numpy(f).to(kernel_device()), nv).cpu().numpy()
    np.testing.assert_array_equal(roots, mesh_vertex_roots_ref(f, nv))
    n_ref, ref = component_labels(nv, f)                          # the engine's CPU reference agrees
    assert np.unique(roots[f[:, 0]]).size == np.unique(ref).size == 3 and n_ref == 8


def test_mesh_roots_refuse_bad_faces():
    with pytest.raises(ValueError, match="int32"):
        mesh_vertex_roots(torch.zeros((2, 3), dtype=torch.int64, device=kernel_device()), 3)


@pytest.mark.parametrize("n, density", [(2, 1.0), (7, 0.55), (9, 0.7)])
def test_grid_components_match_scipy(n, density):
    rng = np.random.default_rng(n)
    free = (rng.random(n ** 3) < density).astype(np.uint8)
    if n > 5:                                                     # a sealed pocket: a dry component
        free.reshape(n, n, n)[1:6, 1:6, 1:6] = 0
        free.reshape(n, n, n)[3, 3, 3] = 1
    got = grid_components(torch.from_numpy(free).to(kernel_device()), n)
    for g, r in zip(got, grid_components_ref(free, n)):
        np.testing.assert_array_equal(g.cpu().numpy(), r)
    assert int(got[1].sum()) == int(free.sum())


def test_grid_components_refuse_bad_mask():
    with pytest.raises(ValueError, match="uint8"):
        grid_components(torch.zeros(27, dtype=torch.bool, device=kernel_device()), 3)
