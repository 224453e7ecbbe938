"""One runtime interface for an exported network, with a per-network PyTorch fallback.

Lifecycle (the shape of TensorRT's demo/Diffusion engine wrapper, written here from its public API):
  load()            deserialize the plan (TensorRT-RTX compiles its kernels for the local GPU here) and
                    create the execution context; the PyTorch fallback puts its module on the device;
  allocate(shapes)  one static torch buffer per input/output tensor on the device, bound by name
                    (``set_tensor_address``); shapes default to the plan's (static exports);
  infer(feeds)      copy the feeds into the input buffers, enqueue on the current torch CUDA stream
                    (``execute_async_v3``), return the output buffers by name (valid until the next call);
  unload()          drop buffers, context and engine.
Implementations: ``TensorRTRTXEngine`` (``tensorrt_rtx``, RTX GPUs of compute capability 7.5-12.x; its
runtime refuses others, e.g. the H100), ``TensorRTEngine`` (``tensorrt``, TensorRT proper: not
installable here, written against the same API and untested), ``TorchEngine`` (the network's own PyTorch
module: always available, and the oracle). ``open_engine`` picks one per network and says why.
Tensors: every feed is a torch tensor of the plan's shape; dtypes follow the plan's (float32 at the
boundary for fp32 plans and Q/DQ plans, the network's precision for bf16/fp16 ones).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trt_builds.tensorrt_build import import_toolkit

RTX_CAPABILITIES = {(7, 5), (8, 0), (8, 6), (8, 9), (12, 0), (12, 1)}


class NetworkEngine(abc.ABC):
    """An exported network with an explicit lifecycle (module docstring)."""

    backend: str = ""

    def __init__(self, name: str, device: torch.device | str = "cuda") -> None:
        self.name, self.device = name, torch.device(device)
        self.buffers: dict[str, torch.Tensor] = {}

    @abc.abstractmethod
    def load(self) -> None: ...

    @abc.abstractmethod
    def allocate(self, shapes: dict[str, tuple[int, ...]] | None = None) -> None: ...

    @abc.abstractmethod
    def infer(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    @abc.abstractmethod
    def unload(self) -> None: ...


class TorchEngine(NetworkEngine):
    """The PyTorch fallback: ``module(*inputs in input_names order)`` -> outputs named ``output_names``."""

    backend = "pytorch"

    def __init__(self, name: str, module: nn.Module, input_names: tuple[str, ...],
                 output_names: tuple[str, ...], device: torch.device | str = "cpu") -> None:
        super().__init__(name, device)
        self.module: nn.Module | None = module
        self.input_names, self.output_names = input_names, output_names

    def load(self) -> None:
        if self.module is None:
            raise RuntimeError(f"{self.name}: the PyTorch module was unloaded")
        self.module = self.module.to(self.device).eval()

    def allocate(self, shapes: dict[str, tuple[int, ...]] | None = None) -> None:
        """Nothing to bind: PyTorch allocates per call from its caching allocator."""

    @torch.no_grad()
    def infer(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.module is None:
            raise RuntimeError(f"{self.name}: infer() before load()")
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"{self.name}: missing inputs {missing}")
        out = self.module(*(feeds[n].to(self.device) for n in self.input_names))
        out = out if isinstance(out, tuple) else (out,)
        return dict(zip(self.output_names, out, strict=True))

    def unload(self) -> None:
        self.module = None


class _PlanEngine(NetworkEngine):
    """A serialized TensorRT(-RTX) plan; ``toolkit`` names the Python module (tensorrt_build.TOOLKITS)."""

    toolkit = ""

    def __init__(self, name: str, plan: Path, device: torch.device | str = "cuda") -> None:
        super().__init__(name, device)
        self.plan = Path(plan)
        self.engine = self.context = None

    def load(self) -> None:
        trt = import_toolkit(self.toolkit)
        if self.device.type != "cuda":
            raise RuntimeError(f"{self.backend} plans run on a CUDA device, not {self.device}")
        self._trt, self._logger = trt, trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{self.backend} could not deserialize {self.plan.name} (log above)")
        self.context = self.engine.create_execution_context()

    def io_names(self) -> list[str]:
        return [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]

    def is_input(self, name: str) -> bool:
        return self.engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT

    def allocate(self, shapes: dict[str, tuple[int, ...]] | None = None) -> None:
        if self.context is None:
            raise RuntimeError(f"{self.name}: allocate() before load()")
        shapes = shapes or {}
        for name in self.io_names():
            if self.is_input(name):
                shape = tuple(shapes.get(name, self.engine.get_tensor_shape(name)))
                self.context.set_input_shape(name, shape)
        for name in self.io_names():
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(self._trt, self.engine.get_tensor_dtype(name))
            self.buffers[name] = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())

    def infer(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.buffers:
            raise RuntimeError(f"{self.name}: infer() before allocate()")
        for name in self.io_names():
            if self.is_input(name):
                if name not in feeds:
                    raise ValueError(f"{self.name}: missing input '{name}'")
                self.buffers[name].copy_(feeds[name], non_blocking=True)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.name}: {self.backend} enqueue failed")
        return {n: b for n, b in self.buffers.items() if not self.is_input(n)}

    def unload(self) -> None:
        self.buffers.clear()
        self.context = self.engine = None


class TensorRTRTXEngine(_PlanEngine):
    backend, toolkit = "tensorrt-rtx", "trt-rtx"


class TensorRTEngine(_PlanEngine):
    backend, toolkit = "tensorrt", "trt"


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
             trt.int32: torch.int32, trt.int64: torch.int64, trt.int8: torch.int8, trt.bool: torch.bool}
    if dtype not in table:
        raise ValueError(f"no torch dtype for TensorRT I/O type {dtype}")
    return table[dtype]


@dataclass
class Choice:
    engine: NetworkEngine
    reason: str


def find_plan(plans: Path, network: str, toolkit: str, arch: str, precision: str | None = None
              ) -> Path | None:
    """The newest plan of ``network`` for ``toolkit`` and ``arch`` in ``plans`` (tensorrt_build names)."""
    pattern = f"{network}.*.{precision or '*'}.*.{toolkit}-*.{arch}.plan"
    found = [p for p in Path(plans).glob(pattern) if p.name.split(".", 1)[0] == network]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def rtx_refusal(device: torch.device) -> str | None:
    """Why the TensorRT-RTX runtime cannot run on ``device`` (None: it can)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return "no CUDA device"
    cc = torch.cuda.get_device_capability(device)
    if cc not in RTX_CAPABILITIES:
        return f"compute capability {cc[0]}.{cc[1]} is not an RTX target (7.5-12.x; the H100 is 9.0)"
    return None


def open_engine(network: str, plans: Path | None, fallback: TorchEngine, device: torch.device | str,
                precision: str | None = None) -> Choice:
    """The engine for ``network`` on ``device``: a TensorRT-RTX plan where the GPU is an RTX target and a
    plan for its arch exists, else a TensorRT plan where ``tensorrt`` imports and one exists, else the
    PyTorch fallback; ``reason`` says which and why. The engine is returned loaded and allocated."""
    device = torch.device(device)
    reasons = []
    if plans is None:
        reasons.append("no plan folder")
    elif (why := rtx_refusal(device)) is not None:
        reasons.append(f"TensorRT-RTX: {why}")
    if plans is not None and device.type == "cuda" and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(device)
        arch = f"sm{major}{minor}"
        for cls, usable in ((TensorRTRTXEngine, rtx_refusal(device) is None), (TensorRTEngine, True)):
            if not usable:
                continue
            try:
                import_toolkit(cls.toolkit)
            except ImportError as err:
                reasons.append(str(err))
                continue
            plan = find_plan(plans, network, cls.toolkit, arch, precision)
            if plan is None:
                reasons.append(f"{cls.backend}: no {network} plan for {arch} in {plans}")
                continue
            engine = cls(network, plan, device)
            try:
                engine.load()
                engine.allocate()
            except RuntimeError as err:
                engine.unload()
                reasons.append(f"{cls.backend}: {err}")
                continue
            return Choice(engine, f"{cls.backend} plan {plan.name}")
    fallback.device = device
    fallback.load()
    fallback.allocate()
    return Choice(fallback, "PyTorch fallback: " + "; ".join(reasons))
