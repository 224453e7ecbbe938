"""Timing one exported network three ways (``benchmarks.models.exports``): the eager export module, its
``torch.compile`` twin and the ``.pt2`` package, on the same inputs.

Synchronised wall time (``torch.cuda.synchronize`` before and after each call): a package may run on a
stream of its own, so events on the caller's stream could miss its work; the same clock serves all three.
Each variant is warmed up (2 calls) and then repeated for about ``target`` seconds (5..50 calls on CUDA,
3..20 on the CPU).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from trt_builds.packaged import max_relative_error


def outputs(x) -> tuple[torch.Tensor, ...]:
    return tuple(x) if isinstance(x, (list, tuple)) else (x,)


@dataclass
class Timer:
    cuda: bool
    target: float  # seconds of timed calls per variant

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def timed(self, fn: Callable[[], object], repeats: int) -> list[float]:
        """Seconds of each of ``repeats`` calls."""
        out = []
        for _ in range(repeats):
            self.sync()
            t = time.perf_counter()
            fn()
            self.sync()
            out.append(time.perf_counter() - t)
        return out

    def bench(self, fn: Callable[[], object]) -> list[float]:
        """Warm-up, then enough repeats for about ``target`` seconds."""
        first = self.timed(fn, 2)[-1]
        lo, hi = (5, 50) if self.cuda else (3, 20)
        return self.timed(fn, max(lo, min(hi, round(self.target / max(first, 1e-6)))))


@dataclass
class Case:
    """One compared network: its export module, inputs (on the device) and torch.compile'd twin."""

    module: torch.nn.Module
    inputs: tuple[torch.Tensor, ...]
    compiled: torch.nn.Module | None = None
    compile_s: float | None = None

    def compile(self, timer: Timer) -> None:
        """``torch.compile`` (default mode); ``compile_s`` is its first call (compile included)."""
        with torch.inference_mode():
            self.module(*self.inputs)
            compiled = torch.compile(self.module)
            self.compile_s = timer.timed(lambda: compiled(*self.inputs), 1)[0]
            self.compiled = compiled

    @property
    def shapes(self) -> str:
        return " ".join("x".join(map(str, x.shape)) for x in self.inputs[:2])


def load_package(path: Path, inputs: tuple[torch.Tensor, ...], timer: Timer):
    """(package, its outputs, seconds from ``load_package`` to the first output synchronised).
    The loader unpacks the package into the temporary folder first: refused when that has too little room."""
    from trt_builds.packaged import load_package as load

    if shutil.disk_usage(tempfile.gettempdir()).free < 1.2 * path.stat().st_size:
        raise OSError(f"{tempfile.gettempdir()} has too little space to unpack {path.name}")
    timer.sync()
    t0 = time.perf_counter()
    package = load(path)
    with torch.inference_mode():
        out = outputs(package(*inputs))
    timer.sync()
    return package, out, time.perf_counter() - t0


def compare(case: Case, package, got: tuple[torch.Tensor, ...], timer: Timer
            ) -> tuple[dict[str, list[float]], float]:
    """({"eager", "package"[, "compile"]} -> seconds per call, max relative error of the package's first
    outputs against eager)."""
    with torch.inference_mode():
        ref = outputs(case.module(*case.inputs))
        err = max(max_relative_error(g, r) for g, r in zip(got, ref))
        times = {"eager": timer.bench(lambda: case.module(*case.inputs)),
                 "package": timer.bench(lambda: package(*case.inputs))}
        if case.compiled is not None:
            compiled = case.compiled
            times["compile"] = timer.bench(lambda: compiled(*case.inputs))
    return times, err
