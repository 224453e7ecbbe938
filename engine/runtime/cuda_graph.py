"""CUDA-graph runner for one denoising step, with an eager fallback (the nano-vllm pattern).

A step is ``fn(*dynamic, *constants) -> Tensor``: ``dynamic`` inputs change at every call (the latent,
the step index), ``constants`` once per request (cross-attention K/V, rotary tables). On CUDA the runner
  1. adopts the given tensors as static input buffers (dynamic ones cloned, constants used as they are,
     so a 1 GiB context is not duplicated),
  2. warms ``fn`` up on a side stream (cuBLAS/cuDNN workspaces, autotuning, lazy tables),
  3. captures one call into a ``torch.cuda.CUDAGraph`` with its own private memory pool, freed with the
     runner (a pool shared by every graph of the process tripped the caching allocator's
     ``use_count > 0`` assertion on the H100 once an earlier sampler's graphs had been freed: PyTorch
     2.11, benchmarks/results/models_meshgen_compile_h100.md),
  4. replays: ``__call__(*dynamic)`` copies the arguments into the static buffers (skipped when the
     argument already is the buffer), replays, and returns the static output tensor.
The output is overwritten by the next replay: clone it to keep it. Without CUDA, with ``enabled=False``,
or if capture raises (an op that syncs with the host, an unsupported kernel), the runner calls ``fn``
eagerly with the same arguments and ``mode`` is "eager" (``reason`` says why).
Shape buckets are explicit: one runner per input shape (e.g. batch 1 distilled, batch 2 CFG).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


class CudaGraphStep:
    """Capture ``fn(*inputs)`` once, replay it with new dynamic inputs; eager fallback."""

    def __init__(self, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], n_dynamic: int,
                 enabled: bool = True, warmup: int = 2) -> None:
        if not 0 <= n_dynamic <= len(inputs):
            raise ValueError(f"n_dynamic={n_dynamic} outside 0..{len(inputs)}")
        self.fn, self.n_dynamic = fn, n_dynamic
        self.inputs = list(inputs)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None
        self.mode, self.reason = "eager", None
        if not enabled:
            self.reason = "disabled"
        elif not torch.cuda.is_available() or not all(t.is_cuda for t in self.inputs):
            self.reason = "inputs are not on a CUDA device"
        else:
            self._capture(warmup)

    def _capture(self, warmup: int) -> None:
        self.inputs[: self.n_dynamic] = [t.clone() for t in self.inputs[: self.n_dynamic]]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self.fn(*self.inputs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the scheduler's other GPU lanes keep syncing and allocating while this lane
            # captures (the global mode failed their host syncs: "operation not permitted when stream is
            # capturing", TextureGen's capture beside the fusion plan on the H100, 2026-12-08)
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.output = self.fn(*self.inputs)
        except RuntimeError as err:  # capture unsupported by an op inside fn: run eagerly instead
            torch.cuda.synchronize()
            self.graph, self.output, self.reason = None, None, f"capture failed: {err}"
            return
        self.graph, self.mode = graph, "graph"

    def set_constants(self, tensors: Sequence[torch.Tensor]) -> None:
        """New per-request constants (same shapes/dtypes): copied into the static buffers in graph mode,
        referenced as they are in eager mode."""
        consts = self.inputs[self.n_dynamic:]
        if len(tensors) != len(consts):
            raise ValueError(f"expected {len(consts)} constant tensors, got {len(tensors)}")
        for i, (dst, src) in enumerate(zip(consts, tensors)):
            if self.graph is None:
                self.inputs[self.n_dynamic + i] = src
            elif src is not dst:
                _check_like(dst, src)
                dst.copy_(src, non_blocking=True)

    def __call__(self, *dynamic: torch.Tensor) -> torch.Tensor:
        """Run one step with new dynamic inputs (shapes/dtypes as captured) -> output."""
        if len(dynamic) != self.n_dynamic:
            raise ValueError(f"expected {self.n_dynamic} dynamic inputs, got {len(dynamic)}")
        if self.graph is None:
            return self.fn(*dynamic, *self.inputs[self.n_dynamic:])
        for dst, src in zip(self.inputs, dynamic):
            if src is not dst:
                _check_like(dst, src)
                dst.copy_(src, non_blocking=True)
        self.graph.replay()
        return self.output


def _check_like(dst: torch.Tensor, src: torch.Tensor) -> None:
    if dst.shape != src.shape or dst.dtype != src.dtype:
        raise ValueError(f"graph input {tuple(src.shape)} {src.dtype} does not match the captured buffer "
                         f"{tuple(dst.shape)} {dst.dtype}: use one runner per shape bucket")
