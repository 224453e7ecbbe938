"""Per-layer sensitivity analysis: which linear layers may run in 8 bits, measured, under a stated budget.

Inputs: a network, the ``LayerStats`` its calibration run recorded (quant/calibrate.py) and a ``Probe``:
the stage's output with the network as it currently is (the sampler's whole trajectory on fixed
calibration inputs), and a score of an output against the full-precision one, normalised by the budget
(score <= 1: within budget; e.g. MeshGen latent relative error / 2 %, TextureGen view MSE / the MSE of
30 dB PSNR).

``analyse``:
  1. eligibility: a layer stays in the network's precision when a ``Budget.protect`` pattern names it
     (paper 8.1: embeddings, the first and last blocks, output projections; context K/V run once per
     request), when it sees fewer than ``min_rows`` rows per call (a GEMV gains nothing) or when K, N are
     not multiples of 16 (the low-precision GEMMs' alignment);
  2. per layer and candidate format (in the order of preference given): the layer's own output SQNR on
     the calibration samples against its full-precision output; the first format that reaches
     ``Budget.layer_sqnr_db`` is the layer's tentative format (none: it stays);
  3. per unit (one transformer block: every tentatively quantised layer of it at once): the stage score
     with only that unit quantised;
  4. units are accepted from the least to the most sensitive; the whole recipe is then measured and,
     while its score exceeds 1, the most sensitive accepted unit is returned to full precision.
The result records every measurement, so the report shows why each layer got its format.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from quant.calibrate import LayerStats
from quant.formats import Format, sqnr_db
from quant.linear import Execution, QuantLinear, fp8_supported
from quant.recipe import swap

DEFAULT_PROTECT = ("*_in", "*_out", "*_proj", "t_embed.*", "final_*", "*.cross.kv", "*.ada.*")


@dataclass(frozen=True)
class Budget:
    """layer_sqnr_db: each quantised layer's output SQNR must reach it; stage scores are normalised so
    that 1.0 is the stage's limit; protect: fnmatch patterns of layer names kept in full precision, plus
    the first and last ``protect_edge_blocks`` blocks; min_rows: smallest GEMM M worth quantising."""

    layer_sqnr_db: float = 20.0
    stage_limit: str = ""
    protect: tuple[str, ...] = DEFAULT_PROTECT
    protect_edge_blocks: int = 1
    min_rows: int = 256


@dataclass
class Probe:
    """run() -> the stage output with the network as it is now; score(reference, output) -> float
    (<= 1: within budget); describe(reference, output) -> dict of human metrics for the report."""

    run: Callable[[], torch.Tensor]
    score: Callable[[torch.Tensor, torch.Tensor], float]
    describe: Callable[[torch.Tensor, torch.Tensor], dict]


@dataclass
class LayerResult:
    name: str
    rows: int
    shape: tuple[int, int]
    sqnr: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    tentative: Format = Format.BF16
    unit: str = ""
    unit_score: float | None = None
    final: Format = Format.BF16


@dataclass
class Analysis:
    layers: dict[str, LayerResult]
    units: dict[str, float]
    accepted: list[str]
    stage: dict
    act_amax: dict[str, float]

    def formats(self) -> dict[str, Format]:
        return {n: r.final for n, r in self.layers.items()}


_BLOCK = re.compile(r"^(.*?blocks\.\d+)\.")


def unit_of(name: str) -> str:
    """'blocks.7.attn.qkv' -> 'blocks.7'; layers outside a block are their own unit."""
    m = _BLOCK.match(name)
    return m.group(1) if m else name


def _edge_blocks(names: list[str], edge: int) -> set[str]:
    idx = sorted({int(m.group(1)) for n in names if (m := re.search(r"blocks\.(\d+)\.", n))})
    return {f"blocks.{i}" for i in idx[:edge] + idx[len(idx) - edge:]} if edge and idx else set()


def eligible_layers(model: nn.Module, stats: dict[str, LayerStats], budget: Budget) -> dict[str, str]:
    """{name: '' when the layer may be quantised, else why not} for every calibrated linear, in module
    order."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n in stats]
    edges = _edge_blocks(names, budget.protect_edge_blocks)
    return {n: eligibility(n, stats[n], budget, edges) for n in names}


def eligibility(name: str, st: LayerStats, budget: Budget, edges: set[str]) -> str:
    """'' when the layer may be quantised, else why not."""
    if any(fnmatch.fnmatchcase(name, p) for p in budget.protect):
        return "protected (embedding/projection/once-per-request)"
    if unit_of(name) in edges:
        return "protected (first/last block)"
    if st.rows < budget.min_rows:
        return f"{st.rows} rows per call < {budget.min_rows}"
    if st.in_features % 16 or st.out_features % 16:
        return "K or N not a multiple of 16"
    return ""


def execution_for(fmt: Format, device: torch.device) -> Execution:
    return Execution.NATIVE if (not fmt.is_fp8 or fp8_supported(device)) else Execution.EMULATE


@torch.inference_mode()
def layer_sqnr(linear: nn.Linear, st: LayerStats, fmt: Format) -> float:
    """Output SQNR (dB) of ``linear`` quantised to ``fmt`` on the calibration samples."""
    x = st.sample().to(linear.weight.device)
    q = QuantLinear(linear, fmt, act_amax=st.amax, channel_amax=st.channel_amax,
                    execution=execution_for(fmt, linear.weight.device))
    return sqnr_db(linear(x), q(x))


def quantise_layers(model: nn.Module, fmts: dict[str, Format], stats: dict[str, LayerStats]
                    ) -> dict[str, nn.Module]:
    """Swap each named linear for its ``QuantLinear`` in ``fmts``' format, in place; returns the
    originals for ``restore_layers``."""
    old = {}
    for n in fmts:
        lin = model.get_submodule(n)
        st = stats[n]
        old[n] = swap(model, n, QuantLinear(lin, fmts[n], act_amax=st.amax, channel_amax=st.channel_amax,
                                            execution=execution_for(fmts[n], lin.weight.device)))
    return old


def restore_layers(model: nn.Module, old: dict[str, nn.Module]) -> None:
    for n, m in old.items():
        swap(model, n, m)


def _score(model, names, fmts, stats, probe: Probe, reference: torch.Tensor) -> tuple[float, torch.Tensor]:
    old = quantise_layers(model, {n: fmts[n] for n in names}, stats)
    try:
        out = probe.run()
        return probe.score(reference, out), out
    finally:
        restore_layers(model, old)


@torch.inference_mode()
def analyse(model: nn.Module, stats: dict[str, LayerStats], probe: Probe, candidates: tuple[Format, ...],
            budget: Budget, log: Callable[[str], None] = lambda s: None) -> Analysis:
    """The module docstring's steps 1-4; ``model`` is left as it was."""
    reasons = eligible_layers(model, stats, budget)
    names = list(reasons)
    layers: dict[str, LayerResult] = {}
    for n in names:
        st = stats[n]
        res = layers[n] = LayerResult(n, st.rows, (st.out_features, st.in_features))
        res.reason = reasons[n]
        if res.reason:
            continue
        lin = model.get_submodule(n)
        for fmt in candidates:
            res.sqnr[fmt.value] = layer_sqnr(lin, st, fmt)
            if res.sqnr[fmt.value] >= budget.layer_sqnr_db and res.tentative is Format.BF16:
                res.tentative = fmt
        if res.tentative is Format.BF16:
            res.reason = f"SQNR below {budget.layer_sqnr_db} dB in every format"
    tentative = {n: r.tentative for n, r in layers.items() if r.tentative is not Format.BF16}
    reference = probe.run().clone()
    by_unit: dict[str, list[str]] = {}
    for n in tentative:
        by_unit.setdefault(unit_of(n), []).append(n)
    units: dict[str, float] = {}
    for u, members in by_unit.items():
        units[u], _ = _score(model, members, tentative, stats, probe, reference)
        for n in members:
            layers[n].unit, layers[n].unit_score = u, units[u]
        log(f"unit {u}: {len(members)} layers, stage score {units[u]:.4f}")
    accepted = sorted((u for u in units if units[u] <= 1.0), key=lambda u: units[u])
    while accepted:
        members = [n for u in accepted for n in by_unit[u]]
        score, out = _score(model, members, tentative, stats, probe, reference)
        log(f"{len(accepted)} units accepted: stage score {score:.4f}")
        if score <= 1.0:
            break
        accepted.pop()                                  # the most sensitive accepted unit goes back
    else:
        score, out = 0.0, reference
    for u in accepted:
        for n in by_unit[u]:
            layers[n].final = tentative[n]
    for u in units:
        if u not in accepted:
            for n in by_unit[u]:
                layers[n].reason = (f"unit {u} over the stage budget alone (score {units[u]:.3f})"
                                    if units[u] > 1.0 else f"unit {u} returned to keep the recipe in budget")
    stage = {"score": score, **probe.describe(reference, out)}
    stage = {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in stage.items()}
    return Analysis(layers, units, accepted, stage, {n: stats[n].amax for n in names})
