"""Activation statistics of every linear layer of a network while it runs real inputs.

``Calibrator(model)`` is a context manager: inside it, each ``nn.Linear`` of ``model`` records, for every
call, (a) the per-input-channel absolute maximum (running max over calls, fp32 on the layer's device: the
static FP8 scale and SmoothQuant's smoothing come from it), (b) the rows per call (a GEMV-sized layer has
nothing to gain from 8-bit GEMMs) and (c) a fixed, evenly strided sample of input rows from every
``sample_every``-th call (``sample_rows`` rows each, at most ``max_samples`` calls): the rows on which
``quant.sensitivity`` measures each layer's output SQNR. Hooks run eagerly: calibrate with CUDA graphs
off (a replayed graph runs no Python).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class LayerStats:
    """What one linear layer saw: channel_amax [K] fp32; rows = the largest M of a call; samples: input
    rows [r, K] in the layer's dtype."""

    in_features: int
    out_features: int
    channel_amax: torch.Tensor
    rows: int = 0
    calls: int = 0
    samples: list[torch.Tensor] = field(default_factory=list)

    @property
    def amax(self) -> float:
        return float(self.channel_amax.max())

    def sample(self) -> torch.Tensor:
        """All sampled rows [R, K]."""
        return torch.cat(self.samples) if self.samples else torch.empty(0, self.in_features)


class Calibrator:
    """Records ``LayerStats`` for every ``nn.Linear`` of ``model`` while inside ``with``."""

    def __init__(self, model: nn.Module, sample_rows: int = 128, sample_every: int = 1,
                 max_samples: int = 8) -> None:
        self.model = model
        self.sample_rows, self.sample_every, self.max_samples = sample_rows, sample_every, max_samples
        self.stats: dict[str, LayerStats] = {}
        self._handles: list = []

    def __enter__(self) -> Calibrator:
        for name, module in self.model.named_modules():
            if isinstance(module, nn.Linear):
                self._handles.append(module.register_forward_pre_hook(self._hook(name, module)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str, module: nn.Linear):
        def record(_module: nn.Module, args: tuple) -> None:
            x2 = args[0].detach().reshape(-1, module.in_features)                       # [M, K]
            amax = x2.abs().amax(dim=0).float()
            st = self.stats.get(name)
            if st is None:
                st = self.stats[name] = LayerStats(module.in_features, module.out_features, amax)
            else:
                torch.maximum(st.channel_amax, amax, out=st.channel_amax)
            if st.calls % self.sample_every == 0 and len(st.samples) < self.max_samples:
                idx = torch.linspace(0, x2.shape[0] - 1, min(self.sample_rows, x2.shape[0]),
                                     device=x2.device).round().long()
                st.samples.append(x2[idx].clone())
            st.rows = max(st.rows, x2.shape[0])
            st.calls += 1

        return record
