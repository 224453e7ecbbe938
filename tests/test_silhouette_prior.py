"""Silhouette shape prior: disc -> sphere/ellipsoid, front projection matches the mask, real RGBA masks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import IMAGES

from engine.errors import InputImageError
from engine.geometry.marching_cubes import extract_mesh
from engine.geometry.sdf_grid import SdfGrid
from engine.geometry.silhouette_prior import BOUNDS, sdf_from_mask


def _disc(size: int, radius: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0                 # pixel-centre world coordinate
    x, y = np.meshgrid(c, -c)                                       # row 0 = +Y
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2


def _front_iou(grid, mask: np.ndarray) -> float:
    """IoU of the occupancy projected along Z vs the mask sampled at the grid's (x, y) nodes."""
    proj = (grid.values < 0).any(axis=2)                            # [n_x, n_y]
    coords = grid.node_coords()
    size = mask.shape[0]
    col = np.clip(((coords + 1) * 0.5 * size).astype(int), 0, size - 1)
    row = np.clip(((1 - coords) * 0.5 * size).astype(int), 0, size - 1)
    inside_image = np.abs(coords) < 1.0
    ref = mask[row[None, :], col[:, None]] & inside_image[:, None] & inside_image[None, :]
    return float((proj & ref).sum() / (proj | ref).sum())


def _volume(mesh) -> float:
    v, f = mesh.vertices.astype(np.float64), mesh.faces
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0)


@pytest.mark.parametrize("depth_ratio", [1.0, 0.5])
def test_disc_inflates_to_ellipsoid(depth_ratio):
    r = 0.6
    grid = sdf_from_mask(_disc(256, r), resolution=64, depth_ratio=depth_ratio)
    assert grid.lo == -BOUNDS and grid.hi == BOUNDS
    mesh = extract_mesh(grid)
    assert _volume(mesh) == pytest.approx(4 / 3 * np.pi * r ** 3 * depth_ratio, rel=0.05)
    lo, hi = mesh.bounds()
    assert hi[2] == pytest.approx(depth_ratio * r, abs=0.04)
    assert lo[2] == pytest.approx(-depth_ratio * r, abs=0.04)
    assert hi[0] == pytest.approx(r, abs=0.03) and hi[1] == pytest.approx(r, abs=0.03)
    if depth_ratio == 1.0:                                          # a round sphere: radii nearly constant
        radii = np.linalg.norm(mesh.vertices, axis=1)
        assert np.abs(radii - r).max() < 0.04
    assert _front_iou(grid, _disc(256, r)) > 0.95


def test_offcentre_mask_orientation():
    # object right of centre and low in the image -> +X, -Y in the world; front (+Z) and back symmetric
    mask = _disc(128, 0.3, cx=0.5, cy=-0.4)
    assert mask[100, 100] and not mask[28, 100] and not mask[100, 28]
    mesh = extract_mesh(sdf_from_mask(mask, resolution=48))
    centre = mesh.vertices.mean(axis=0)
    assert centre[0] == pytest.approx(0.5, abs=0.03) and centre[1] == pytest.approx(-0.4, abs=0.03)
    assert abs(centre[2]) < 0.02


@pytest.mark.parametrize("name", ["typical_creature_elephant.png", "typical_misc_lantern.png"])
def test_real_rgba_mask_front_projection(shared_dir, name):
    from PIL import Image

    rgba = np.asarray(Image.open(IMAGES / name).convert("RGBA"))
    alpha = rgba[..., 3] > 127
    size = max(alpha.shape)
    square = np.zeros((size, size), bool)
    top, left = (size - alpha.shape[0]) // 2, (size - alpha.shape[1]) // 2
    square[top:top + alpha.shape[0], left:left + alpha.shape[1]] = alpha
    grid = sdf_from_mask(square, resolution=96, depth_ratio=0.8)
    assert _front_iou(grid, square) > 0.95
    mesh = extract_mesh(grid)
    assert _volume(mesh) > 0 and mesh.num_faces > 1000


def test_bad_masks_raise():
    with pytest.raises(InputImageError, match="empty"):
        sdf_from_mask(np.zeros((32, 32), bool), resolution=32)
    with pytest.raises(InputImageError):
        sdf_from_mask(np.ones((32, 32), bool), resolution=32)
    with pytest.raises(InputImageError):
        sdf_from_mask(np.ones((32, 16), bool), resolution=32)


def test_device_field_gives_the_reference_mesh_on_a_real_picture():
    """The torch-built field (first-order distance everywhere) and the CPU reference differ only beyond
    one voxel from the surface, so marching cubes returns the same mesh, and the signs agree everywhere."""
    import torch

    from engine.io.image_input import prepare_image

    mask = prepare_image(IMAGES / "typical_misc_crate.png").mask
    ref = sdf_from_mask(mask, resolution=64)
    dev = sdf_from_mask(mask, resolution=64, device="cpu")
    assert isinstance(dev.values, torch.Tensor) and dev.values.dtype == torch.float32
    values = dev.values.numpy()
    assert np.array_equal(values < 0, ref.values < 0)
    a = extract_mesh(ref)
    b = extract_mesh(SdfGrid(values, dev.lo, dev.hi))
    assert a.num_faces > 1000
    assert np.array_equal(a.faces, b.faces) and np.allclose(a.vertices, b.vertices, atol=1e-6)


def test_device_field_slabs_do_not_change_values(monkeypatch):
    """The device field is built in x-slabs of SLAB_ELEMENTS float64 temporaries: any slab size gives the
    same float32 values bit for bit (elementwise maths), here one x-slice per step vs several."""
    import torch

    from engine.geometry import silhouette_prior

    yy, xx = np.mgrid[:48, :48]
    mask = (xx - 20) ** 2 / 300 + (yy - 26) ** 2 / 120 < 1
    big = sdf_from_mask(mask, resolution=40, device="cpu").values
    monkeypatch.setattr(silhouette_prior, "SLAB_ELEMENTS", 1)
    one = sdf_from_mask(mask, resolution=40, device="cpu").values
    monkeypatch.setattr(silhouette_prior, "SLAB_ELEMENTS", 3 * 41 * 41 + 5)
    three = sdf_from_mask(mask, resolution=40, device="cpu").values
    assert isinstance(big, torch.Tensor) and torch.equal(big, one) and torch.equal(big, three)
