"""Launch plumbing for the numba-cuda kernels beside the Triton ones (irregular work: BVH, edge collapse,
rasterisation with atomics).

Every GPU geometry module takes and returns torch tensors. On a CUDA machine they live on the GPU and are
handed to numba-cuda kernels without copies through ``__cuda_array_interface__``, launched on torch's
current stream. In CI there is no GPU: with ``NUMBA_ENABLE_CUDASIM=1`` (set by ``tests/conftest.py`` before
numba is imported) the same kernels run in numba's CUDA simulator on CPU tensors, viewed as numpy arrays
that share their memory, so the parity tests exercise the exact kernel code on small inputs.

Usage::

    dev = kernel_device()                       # torch.device("cuda") or, under the simulator, "cpu"
    x = torch.zeros(n, device=dev)
    launch(my_kernel, n, view(x), n)            # one thread per item, 256 per block
"""

from __future__ import annotations

import json
import os

import torch

from triton_kernels.errors import MissingDependencyError

THREADS = 256
# profiling/cuda_compile.py's record phase: each launched kernel's name and argument types, a JSON line each
_RECORD = os.environ.get("ASSETGEN_RECORD_LAUNCHES")


def simulated() -> bool:
    """True when numba-cuda kernels run in numba's CPU simulator (``NUMBA_ENABLE_CUDASIM=1`` in the
    environment before numba was first imported; numba reads it once, so this asks numba's config)."""
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


# numba-cuda 0.30.4 (the newest release, installed on the H100 machine) registers overloads for numpy
# functions that numpy 2.4 removed, at the first kernel compile; alias them to their documented successors.
_NUMPY_REMOVED = {"row_stack": "vstack", "in1d": "isin", "trapz": "trapezoid"}


def _numpy_compat() -> None:
    import numpy as np

    for old, new in _NUMPY_REMOVED.items():
        if not hasattr(np, old) and hasattr(np, new):
            setattr(np, old, getattr(np, new))


def cuda_module():
    """The ``numba.cuda`` module, or a MissingDependencyError naming the ``gpu`` extra."""
    _numpy_compat()
    try:
        from numba import config, cuda
    except ImportError as exc:  # pragma: no cover - numba is a core dependency
        raise MissingDependencyError("numba", "gpu") from exc
    config.CUDA_LOW_OCCUPANCY_WARNINGS = 0   # small launches (tiny meshes, last passes) are expected
    return cuda


def kernel_device() -> torch.device:
    """Device on which tensors for numba-cuda kernels must live: CUDA, or the CPU under the simulator."""
    if simulated():
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise MissingDependencyError("a CUDA GPU (or NUMBA_ENABLE_CUDASIM=1 for the CPU simulator)", "gpu")
    return torch.device("cuda", torch.cuda.current_device())


def view(tensor: torch.Tensor):
    """Zero-copy kernel argument for ``tensor``: a numba device array on CUDA, a numpy view under the
    simulator. The tensor must be contiguous and on ``kernel_device()``; it must outlive the launch."""
    if not tensor.is_contiguous():
        raise ValueError("numba-cuda kernel arguments must be contiguous tensors")
    if simulated():
        if tensor.is_cuda:
            raise ValueError("CUDA tensor passed to a kernel running in the CPU simulator")
        return tensor.detach().numpy()
    if not tensor.is_cuda:
        raise ValueError("CPU tensor passed to a numba-cuda kernel; move it to kernel_device() first")
    return cuda_module().as_cuda_array(tensor.detach())


def _stream():
    if simulated():
        return 0
    return cuda_module().external_stream(torch.cuda.current_stream().cuda_stream)


def launch(kernel, items: int, *args, threads: int = THREADS) -> None:
    """Launch ``kernel`` with one thread per item (``items >= 0``) on torch's current stream."""
    if items <= 0:
        return
    if _RECORD:
        _record(kernel, args)
    blocks = (items + threads - 1) // threads
    kernel[blocks, threads, _stream()](*args)


def _record(kernel, args) -> None:
    """Append {"module", "kernel", "args": numba type names} of this launch to ``_RECORD``."""
    from numba import typeof

    fn = getattr(kernel, "py_func", None) or getattr(kernel, "fn", None)
    line = {"module": fn.__module__, "kernel": fn.__name__, "args": [str(typeof(a)) for a in args]}
    with open(_RECORD, "a") as out:
        out.write(json.dumps(line) + "\n")
