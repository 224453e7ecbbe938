"""The numba-cuda launch plumbing: zero-copy views and one-thread-per-item launches (simulator in CI)."""

from __future__ import annotations

import pytest
import torch

from triton_kernels.numba_cuda import cuda_module, kernel_device, launch, view

cuda = cuda_module()


@cuda.jit
def _add_index(out, n):
    i = cuda.grid(1)
    if i < n:
        out[i] += i


@pytest.mark.parametrize("n", [0, 1, 300])
def test_launch_writes_through_view(n):
    x = torch.ones(max(n, 1), device=kernel_device())
    launch(_add_index, n, view(x), n)
    expected = torch.ones(max(n, 1)) + torch.where(torch.arange(max(n, 1)) < n, torch.arange(max(n, 1)), 0)
    assert torch.equal(x.cpu(), expected.float())


def test_view_refuses_non_contiguous():
    x = torch.zeros(4, 4, device=kernel_device()).t()
    with pytest.raises(ValueError, match="contiguous"):
        view(x)
