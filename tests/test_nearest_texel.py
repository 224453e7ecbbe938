"""Nearest valid texel within a window (triton_kernels/nearest_texel.py) against its brute-force reference
(exact, ties included), in the CUDA simulator in CI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from triton_kernels.nearest_texel import nearest_valid_texel, nearest_valid_texel_ref
from triton_kernels.numba_cuda import kernel_device


@pytest.mark.parametrize("shape, pixels, density",
                         [((13, 17), 3, 0.08), ((9, 6), 0, 0.3), ((20, 11), 30, 0.02)])
def test_matches_reference(shape, pixels, density):
    valid = np.random.default_rng(pixels).random(shape) < density
    got = nearest_valid_texel(torch.from_numpy(valid).to(kernel_device()), pixels).cpu().numpy()
    np.testing.assert_array_equal(got, nearest_valid_texel_ref(valid, pixels))
    assert (got[valid.reshape(-1)] == np.flatnonzero(valid)).all()


def test_ties_follow_the_documented_rule():
    valid = np.zeros((7, 7), bool)
    valid[1, 3] = valid[5, 3] = valid[3, 1] = valid[3, 5] = True    # four texels at distance 2 from (3, 3)
    got = nearest_valid_texel(torch.from_numpy(valid).to(kernel_device()), 4).cpu().numpy()
    assert got[3 * 7 + 3] == 1 * 7 + 3                             # |dc| = 0 first, then the row above
    valid[1, 3] = valid[5, 3] = False
    got = nearest_valid_texel(torch.from_numpy(valid).to(kernel_device()), 4).cpu().numpy()
    assert got[3 * 7 + 3] == 3 * 7 + 5                             # then the right column
    np.testing.assert_array_equal(got, nearest_valid_texel_ref(valid, 4))


def test_empty_mask_and_bad_input():
    got = nearest_valid_texel(torch.zeros((4, 5), dtype=torch.bool, device=kernel_device()), 2)
    assert (got.cpu().numpy() == -1).all()
    with pytest.raises(ValueError, match="bool"):
        nearest_valid_texel(torch.zeros((4, 5), device=kernel_device()), 2)
