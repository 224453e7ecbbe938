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


def test_launches_are_recorded_for_the_compile_check(tmp_path, monkeypatch):
    """With ``ASSETGEN_RECORD_LAUNCHES`` (profiling/cuda_compile.py's record phase) each launch writes its
    kernel's module, name and numba argument types; a launch of no items writes nothing."""
    import json

    from triton_kernels import numba_cuda

    record = tmp_path / "launches.jsonl"
    monkeypatch.setattr(numba_cuda, "_RECORD", str(record))
    x = torch.ones(8, device=kernel_device())
    launch(_add_index, 8, view(x), 8)
    launch(_add_index, 0, view(x), 0)
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert lines == [{"module": __name__, "kernel": "_add_index", "args": ["array(float32, 1d, C)", "int64"]}]
