"""triton_kernels/distance_transform.py: the exact EDT against scipy's (its reference), bit for bit, for
any thread count and on every call; the shape prior built on it is a function of the picture."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import IMAGES

from triton_kernels.distance_transform import edt, edt_ref


@pytest.mark.parametrize("shape", [(1, 9), (48, 48), (37, 91), (130, 70)])
@pytest.mark.parametrize("density", [0.02, 0.5, 0.98])
def test_edt_equals_scipy_bit_for_bit(shape, density):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) > density
    mask.flat[rng.integers(mask.size)] = False                       # at least one False pixel
    want = edt_ref(mask)
    for workers in (1, 3):
        got = edt(mask, workers)
        assert got.dtype == np.float64 and np.array_equal(got, want)


def test_edt_of_a_real_silhouette_is_the_same_on_every_call():
    from engine.io.image_input import prepare_image

    mask = prepare_image(IMAGES / "typical_creature_dragon.png").mask
    first = edt(~mask, 2)
    assert np.array_equal(first, edt_ref(~mask))
    assert all(np.array_equal(first, edt(~mask, w)) for w in (1, 2, 4))


def test_edt_rejects_a_non_2d_mask():
    with pytest.raises(ValueError, match="2D mask"):
        edt(np.zeros((2, 2, 2), bool))


def test_shape_prior_is_a_function_of_the_mask_after_torch_started_its_threads():
    """OpenCV's precise EDT (the prior's before) changed between calls once torch's thread pool ran."""
    import torch

    from engine.geometry.silhouette_prior import silhouette_profile

    yy, xx = np.mgrid[:96, :96]
    mask = (xx - 40) ** 2 / 900 + (yy - 52) ** 2 / 480 < 1
    torch.randn(512, 512) @ torch.randn(512, 512)
    first = silhouette_profile(mask, 64)
    for _ in range(5):
        again = silhouette_profile(mask, 64)
        assert all(np.array_equal(a, b) for a, b in zip(first, again))
