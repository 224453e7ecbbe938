"""Low-precision GEMMs and DiT samplers: bf16 against FP8 / INT8, measured in the same run.

    python -m benchmarks.models.quant --out benchmarks/results/quant_h100.md --csv benchmarks/results/h100.csv

1. GEMMs at the DiTs' shapes: bf16 ``torch.mm``, FP8 tensorwise and rowwise ``torch._scaled_mm``, INT8
   ``torch._int_mm``: the GEMM alone (operands already quantised: rate against its ceiling, bf16 797,
   FP8 1448 TFLOP/s, INT8 926 TOP/s, shared/TARGETS.md) and the whole ``QuantLinear`` (activation
   quantisation kernel + GEMM + scales), beside ``quant_rows`` alone (GB/s against ~3 TB/s).
2. Each DiT's sampler with CUDA graphs (MeshGen coarse 25 / refine 5 steps, TextureGen flash 4 steps; the
   random paper-size networks and real calibration inputs of ``quant.probes``): bf16, the measured recipe
   (``quant/recipes/<network>.fp8.<arch>.json`` when present), and every eligible layer in FP8 rowwise,
   FP8 tensorwise and INT8 (the speed bound of each format), with the fidelity of each against bf16
   (MeshGen final latent relative error, TextureGen decoded views PSNR).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import append_result, cuda_times, git_sha, percentiles

CEILING = {"bf16": 797e12, "fp8_tensor": 1448e12, "fp8_row": 1448e12, "int8": 926e12}
SHAPES = [  # (what, M, K, N): TextureGen flash (25344 tokens, width 3072), MeshGen coarse (4096, 2048)
    ("texturegen qkv", 25344, 3072, 9216), ("texturegen ffn.gate_up", 25344, 3072, 24576),
    ("texturegen ffn.out", 25344, 12288, 3072), ("meshgen qkv", 4096, 2048, 6144),
    ("meshgen ffn.out", 4096, 5632, 2048)]


def gemm_rows(repeats: int) -> list[dict]:
    rows = []
    for shape in SHAPES:
        rows += _gemm_shape(*shape, repeats)
        torch.cuda.empty_cache()
    return rows


def _gemm_shape(what: str, m: int, k: int, n: int, repeats: int) -> list[dict]:
    from quant.formats import Format
    from quant.linear import QuantLinear
    from triton_kernels.quant_rows import quant_rows

    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    lin = nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
    flops = 2 * m * k * n
    cases = {"bf16": (lambda: torch.mm(a, lin.weight.t()), lambda: lin(a))}
    for fmt in (Format.FP8_TENSOR, Format.FP8_ROW, Format.INT8):
        ql = QuantLinear(lin, fmt, act_amax=float(a.abs().max()), channel_amax=a.abs().amax(0).float())
        q, s = ql.quantize_input(a)
        cases[fmt.value] = (lambda ql=ql, q=q, s=s: ql._gemm(q, s), lambda ql=ql: ql(a))
    t_q = percentiles(cuda_times(lambda: quant_rows(a, "fp8"), repeats))[0]
    rows = [dict(name="quant_rows", variant="fp8 dynamic", size=f"M={m},K={k}", metric="latency", unit="s",
                 p50=t_q, rate=f"{3 * m * k / t_q / 1e9:.0f} GB/s",
                 share=f"{3 * m * k / t_q / 3.0e12:.0%} of 3 TB/s")]
    for fmt, (gemm, layer) in cases.items():
        t_g = percentiles(cuda_times(gemm, repeats))[0]
        t_l = percentiles(cuda_times(layer, repeats))[0]
        size = f"{what} M={m},K={k},N={n}"
        rows.append(dict(name="quant_gemm", variant=fmt, size=size, metric="gemm", unit="s", p50=t_g,
                         rate=f"{flops / t_g / 1e12:.0f} TFLOP/s",
                         share=f"{flops / t_g / CEILING[fmt]:.0%} of {CEILING[fmt] / 1e12:.0f}"))
        rows.append(dict(name="quant_gemm", variant=fmt, size=size, metric="layer", unit="s", p50=t_l,
                         rate=f"{flops / t_l / 1e12:.0f} TFLOP/s", share=""))
    return rows


def sampler_rows(network: str, shared: Path, repeats: int,
                 formats: tuple[str, ...] = ("fp8_row", "fp8_tensor", "int8"), compile_: bool = False,
                 on_row=None) -> list[dict]:
    """Each variant's sampler (CUDA-graph replays), eager and with the fused Triton kernels
    (``dit_layers.set_fused``: the engine's CUDA default); ``compile_``: each also with its DiT blocks
    through torch.compile (``engine.runtime.models.compile_blocks``), the first run's compile time
    reported; those last. ``on_row(rows)`` after each row (the caller rewrites its table)."""
    from engine.models.dit_layers import set_fused
    from engine.runtime.models import compile_blocks
    from quant import probes
    from quant.calibrate import Calibrator
    from quant.formats import Format
    from quant.recipe import RECIPES, Recipe, arch_family, recipe_name
    from quant.sensitivity import eligible_layers, quantise_layers, restore_layers

    pics = [shared / "images" / "typical_misc_crate.png"]
    if network == "meshgen_coarse":
        target = probes.meshgen_coarse("paper", "cuda", pics)
    elif network == "meshgen_refine":
        target = probes.meshgen_refine("paper", "cuda", pics)
    else:
        target = probes.texturegen("paper", "cuda", pics, [shared / "assets" / "spot" / "spot.obj"])
    with Calibrator(target.model, max_samples=2) as cal:
        target.calibrate()
    reasons = eligible_layers(target.model, cal.stats, target.budget)
    eligible = [n for n, why in reasons.items() if not why]
    variants: dict[str, dict[str, Format]] = {"bf16": {}}
    arch = arch_family(next(target.model.parameters()).device)
    path = RECIPES / f"{recipe_name(network, 'fp8', arch)}.json"
    if path.is_file():
        recipe = {n: f for n, f in Recipe.load(path).formats().items() if f is not Format.BF16}
        variants[f"recipe {path.name}"] = recipe
    for fmt in map(Format, formats):
        variants[f"all eligible {fmt.value}"] = {n: fmt for n in eligible}
    reference = target.probe.run().clone()
    rows, base = [], None
    # every variant eager and fused first, the compiled runs (minutes of compilation each) last
    modes = (("", False), (" + fused", True))
    runs = [(v, suffix, fused, False) for suffix, fused in modes for v in variants]
    runs += [(v, " + compile", False, True) for v in variants] if compile_ else []
    for variant, suffix, fused, compiled in runs:
        fmts = variants[variant]
        old = quantise_layers(target.model, fmts, cal.stats)
        try:
            set_fused(target.model, fused)
            compile_blocks(target.model, compiled)
            target.reset()
            t0 = time.perf_counter()
            out = target.probe.run()                          # compiled: compiles every block pattern
            first = time.perf_counter() - t0
            fidelity = target.probe.describe(reference, out) if fmts or suffix else {}
            with torch.inference_mode():
                warm = cuda_times(target.timed, 1)[0]
                p50, p20, p80 = percentiles(cuda_times(target.timed, repeats))
            base = base or p50
            fid = ", ".join(f"{k} {v:.4g}" for k, v in fidelity.items())
            if compiled:
                fid += f"; first eager run (compiling) {first:.1f} s"
            rows.append(dict(name=f"quant_{network}", variant=variant + suffix,
                             size=f"{len(fmts)} of {len(reasons)} layers", metric="sampler", unit="s",
                             p50=p50, p20=p20, p80=p80, warm=warm, rate=f"{base / p50:.2f}x bf16", share=fid))
            print(rows[-1], flush=True)
            if on_row is not None:
                on_row(rows)
        finally:
            set_fused(target.model, False)
            compile_blocks(target.model, False)
            restore_layers(target.model, old)
            target.reset()
    return rows


def markdown(rows: list[dict]) -> str:
    dev = torch.cuda.get_device_name()
    lines = [f"# Low-precision GEMMs and DiT samplers ({dev}, git {git_sha()})", "",
             "| what | variant | size | metric | p50 | rate | share of ceiling / fidelity vs bf16 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['variant']} | {r['size']} | {r['metric']} | {r['p50']:.4g} s | "
                     f"{r.get('rate', '')} | {r.get('share', '')} |")
    lines += ["", "gemm: operands already quantised; layer: QuantLinear.forward (activation quantisation + "
              "GEMM + scales) against nn.Linear. Sampler rows: CUDA-graph replays of the whole sampler; "
              "fidelity from an eager run against the bf16 network on the same inputs."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import os

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--csv", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--networks", default="meshgen_coarse,meshgen_refine,texturegen")
    ap.add_argument("--no-gemm", action="store_true")
    ap.add_argument("--formats", default="fp8_row,fp8_tensor,int8",
                    help="formats of the all-eligible sampler variants")
    ap.add_argument("--compile", action="store_true", help="each sampler variant also torch.compiled")
    args = ap.parse_args(argv)
    shared = Path(os.environ.get("ASSETGEN_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    rows = [] if args.no_gemm else gemm_rows(20)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows))
    for net in [n for n in args.networks.split(",") if n]:
        done = list(rows)
        rows += sampler_rows(net, shared, args.repeats, tuple(f for f in args.formats.split(",") if f),
                             args.compile, on_row=lambda new: args.out.write_text(markdown(done + new)))
        args.out.write_text(markdown(rows))
        torch.cuda.empty_cache()
    if args.csv:
        for r in rows:
            append_result(args.csv, r["name"], r["variant"], r["metric"], r["unit"], r["size"], r["p50"],
                          r.get("p20"), r.get("p80"), config=f"{r.get('rate', '')}; {r.get('share', '')}",
                          device=torch.cuda.get_device_name())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
