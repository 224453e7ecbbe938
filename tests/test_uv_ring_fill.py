"""triton_kernels/uv_ring_fill.py: the numba kernel gives the numpy reference's bytes (colours, grown known
set, count), on a synthetic two-chart atlas with a gate that matters and on a real fused atlas."""

from __future__ import annotations

import numpy as np
import pytest

from triton_kernels.uv_ring_fill import uv_ring_fill, uv_ring_fill_ref


def _atlas(seed: int, size: int = 96):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    valid = (np.abs(xx - size / 4) < size / 5) | (np.abs(xx - 3 * size / 4) < size / 5)
    valid &= rng.random((size, size)) > 0.05
    # positions: two charts far apart in 3D, a crease inside the first (the gate must cut there)
    pos = np.stack([xx * 0.01, yy * 0.01, np.where(xx > size / 2, 5.0, 0.0)], -1).astype(np.float32)
    pos[:, : size // 4, 2] += np.where(yy[:, : size // 4] > size / 2, 0.05, 0.0)
    pos += rng.normal(0, 1e-4, pos.shape).astype(np.float32)
    known = valid & (rng.random((size, size)) > 0.8)
    atlas = rng.random((size, size, 3)).astype(np.float32)
    return atlas, known, valid, pos


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rings", [0, 1, 3, 16])
def test_kernel_equals_reference(seed, rings):
    atlas, known, valid, pos = _atlas(seed)
    want = uv_ring_fill_ref(atlas, known, valid, pos, 0.03, rings)
    got = uv_ring_fill(atlas, known, valid, pos, 0.03, rings)
    assert got[2] == want[2]
    assert np.array_equal(got[1], want[1])
    assert np.array_equal(got[0], want[0])
    if rings >= 3:
        assert got[2] > 0 and not got[1][:, : 96 // 2].all()      # filled some, stopped at chart borders


def test_kernel_equals_reference_on_a_real_atlas(shared_dir):
    """The texel geometry of a real unwrapped mesh (spot, charts UV) with the front third known."""
    from engine.geometry.mesh import vertex_normals
    from engine.geometry.uv_fast import unwrap_uv_fast
    from engine.io.asset_load import find_mesh_file, load_mesh
    from engine.texture.backproject import texel_geometry
    from engine.texture.inpaint import texel_world_size

    mesh = load_mesh(find_mesh_file(shared_dir / "assets" / "spot"))
    mesh = mesh.copy(normals=vertex_normals(mesh.vertices, mesh.faces), uvs=None)
    unwrapped, _ = unwrap_uv_fast(mesh, resolution=256)
    texels = texel_geometry(unwrapped, 256)
    known = texels.valid & (texels.position[..., 2] > np.quantile(texels.position[texels.valid][:, 2], 0.66))
    atlas = np.random.default_rng(0).random((256, 256, 3)).astype(np.float32)
    limit = 3.0 * texel_world_size(texels.position, texels.valid)
    want = uv_ring_fill_ref(atlas, known, texels.valid, texels.position, limit, 16)
    got = uv_ring_fill(atlas, known, texels.valid, texels.position, limit, 16)
    assert got[2] == want[2] > 0
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[0], want[0])


def test_mismatched_shapes_are_refused():
    atlas, known, valid, pos = _atlas(0)
    with pytest.raises(ValueError, match="disagree"):
        uv_ring_fill(atlas, known[:-1], valid, pos, 0.03)
