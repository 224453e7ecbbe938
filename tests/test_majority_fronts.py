"""Neighbour-majority front propagation (triton_kernels/majority_fronts.py) against its numpy reference and
the CPU watertight's ``_propagate``, in the CUDA simulator in CI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.geometry.watertight import _propagate, _seeds
from triton_kernels.majority_fronts import propagate_majority, propagate_majority_ref
from triton_kernels.numba_cuda import kernel_device


def _lattice(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """state int8 [n^3] with a few labelled blobs, eligible bool [n^3] with holes (unreached pockets)."""
    rng = np.random.default_rng(seed)
    state = np.zeros((n, n, n), np.int8)
    state[1:3, 1:3, 1:3] = -1
    state[n - 2:, :, n // 2] = 1
    state[rng.random((n, n, n)) < 0.03] = -1
    eligible = (rng.random((n, n, n)) < 0.8) & (state == 0)
    return state.reshape(-1), eligible.reshape(-1)


@pytest.mark.parametrize("n, seed", [(6, 0), (9, 1)])
def test_matches_references(n, seed):
    state, eligible = _lattice(n, seed)
    got = torch.from_numpy(state.copy()).to(kernel_device())
    rounds = propagate_majority(got, torch.from_numpy(eligible).to(kernel_device()), n)
    ref = state.copy()
    assert rounds == propagate_majority_ref(ref, eligible, n) > 1
    np.testing.assert_array_equal(got.cpu().numpy(), ref)
    cpu = state.copy()                                            # the CPU watertight's own loop
    elig3 = eligible.reshape(n, n, n)
    _propagate(cpu, eligible.astype(np.uint8), _seeds(state.reshape(n, n, n), elig3), n)
    np.testing.assert_array_equal(cpu, ref)
    assert (ref[eligible] != 0).any() and (ref[~eligible] == state[~eligible]).all()


def test_nothing_eligible_and_bad_input():
    state, _ = _lattice(4, 2)
    t = torch.from_numpy(state.copy()).to(kernel_device())
    assert propagate_majority(t, torch.zeros(64, dtype=torch.bool, device=t.device), 4) == 0
    assert np.array_equal(t.cpu().numpy(), state)
    with pytest.raises(ValueError, match="int8"):
        propagate_majority(t.int(), torch.zeros(64, dtype=torch.bool, device=t.device), 4)
