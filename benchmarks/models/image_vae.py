"""TextureGen's image VAE and per-view super-resolution at full size, random weights (paper Table 6).

Rows measured (one model resident at a time, freed after):
  * encode 1 + K reference/condition images: the reference, plus K normal and K position renders
    (11 + 20 = 31 images at 1024 px for K = 10);
  * decode K views at 1024 px (default preset) and at 768 px (flash preset);
  * super-resolution of K 1024 px views to 2048 px (default preset; paper: 3.112 s, target <= 1.0 s).
For each: warm-up (first call, includes cuDNN autotuning) reported apart, then median/p20/p80 over
``repeats`` CUDA-event timings, TFLOP/s from the shape-derived conv/matmul FLOPs and its share of the
measured bf16 GEMM ceiling (797 TFLOP/s), and the peak allocated memory of the call (weights included).
bf16 + channels-last + cuDNN autotuning on CUDA; fp32 on the CPU (the CPU path is for tests only).

  python -m benchmarks.models.image_vae --device cuda --preset paper --repeats 10
  python -m benchmarks.models.image_vae --device cpu --preset tiny --repeats 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import append_result, cuda_times, percentiles
from benchmarks.models.harness import free_device
from engine.models.checkpoints import init_random
from engine.models.image_vae import ImageVAE, ImageVAEConfig, flops_decode, flops_encode, prepare
from engine.models.super_resolution import SuperResolution, SuperResolutionConfig, flops_upscale

BF16_GEMM_TFLOPS = 797.0  # shared/TARGETS.md, measured on the H100
PAPER_SR_S = 3.112  # paper Table 6, per-view super-resolution (default preset)
TARGET_SR_S = 1.0  # shared/TARGETS.md


def _times(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, list[float], float]:
    """(warm-up seconds, steady-state seconds per call, peak allocated GB of one call)."""
    if device == "cuda":
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        warm = time.perf_counter() - t0
        torch.cuda.reset_peak_memory_stats()
        times = cuda_times(fn, repeats)
        return warm, times, torch.cuda.max_memory_allocated() / 2**30
    t0 = time.perf_counter()
    fn()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return warm, times, float("nan")


def _row(name: str, variant: str, size: str, times: list[float], flop: int, warm: float, peak_gb: float,
         config: str, paper: str) -> dict:
    p50, p20, p80 = percentiles(times)
    tflops = flop / p50 / 1e12
    return dict(name=name, variant=variant, metric="latency", unit="s", size=size, p50=p50, p20=p20,
                p80=p80, config=config, tflops=tflops, ceiling_share=tflops / BF16_GEMM_TFLOPS,
                warmup_s=warm, peak_gb=peak_gb, flop=flop, paper=paper)


def bench_vae(device: str, preset: str, repeats: int, size: int, views: int) -> list[dict]:
    cfg = ImageVAEConfig.from_name(preset)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = init_random(prepare(ImageVAE(cfg), device), seed=0)
    conf = (f"preset={preset} f{cfg.downsample}c{cfg.latent_channels} params={model.param_count / 1e6:.1f}M "
            f"max_batch={cfg.max_batch} dtype={str(dtype).removeprefix('torch.')}")
    gen = torch.Generator(device=device).manual_seed(0)
    n_enc = 1 + 2 * views  # reference + a normal and a position render per view
    rows = []
    with torch.inference_mode():
        images = torch.rand(n_enc, 3, size, size, generator=gen, device=device, dtype=dtype) * 2 - 1
        warm, times, peak = _times(lambda: model.encode(images), device, repeats)
        rows.append(_row("image_vae", f"encode_{n_enc}_images_{size}px", f"{n_enc}x{size}", times,
                         n_enc * flops_encode(cfg, 1, size), warm, peak, conf, "- (inside Diffusion row)"))
        for px in (size, size * 3 // 4):  # default 1024 px, flash 768 px
            lat = torch.randn(views, cfg.latent_channels, px // cfg.downsample, px // cfg.downsample,
                              generator=gen, device=device, dtype=dtype)
            warm, times, peak = _times(lambda: model.decode(lat), device, repeats)
            rows.append(_row("image_vae", f"decode_views_{px}px", f"{views}x{px}", times,
                             views * flops_decode(cfg, 1, px), warm, peak, conf, "- (inside Diffusion row)"))
    return rows  # the model is freed with this frame; bench() then empties the CUDA cache


def bench_sr(device: str, preset: str, repeats: int, size: int, views: int) -> list[dict]:
    cfg = SuperResolutionConfig.from_name(preset)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = init_random(prepare(SuperResolution(cfg), device), seed=0)
    conf = (f"preset={preset} RRDBNet x{cfg.scale} blocks={cfg.blocks} params={model.param_count / 1e6:.1f}M "
            f"max_batch={cfg.max_batch} dtype={str(dtype).removeprefix('torch.')}")
    with torch.inference_mode():
        views_in = torch.rand(views, 3, size, size, device=device, dtype=dtype)
        warm, times, peak = _times(lambda: model.upscale(views_in), device, repeats)
    row = _row("super_resolution", "sr_views", f"{views}x{size}->{size * cfg.scale}", times,
               views * flops_upscale(cfg, 1, size), warm, peak, conf,
               f"{PAPER_SR_S} s (target <= {TARGET_SR_S} s)")
    return [row]


def bench(device: str = "cuda", preset: str = "paper", repeats: int = 10, size: int | None = None,
          views: int | None = None) -> list[dict]:
    """All rows (see the module docstring). ``size``: the default preset's view resolution (1024 for
    ``paper``, 64 for ``tiny``); ``views``: K (10 for ``paper``, 2 for ``tiny``)."""
    size = size or (1024 if preset == "paper" else 64)
    views = views or (10 if preset == "paper" else 2)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed conv shapes: autotune once (in the warm-up)
    rows = bench_vae(device, preset, repeats, size, views)
    free_device(device)
    rows += bench_sr(device, preset, repeats, size, views)
    free_device(device)
    return rows


def markdown(rows: list[dict], device_name: str) -> str:
    lines = [f"# Image VAE and per-view super-resolution on {device_name}", "",
             "| model | work | p50 s | p20-p80 s | warm-up s | TFLOP/s | % of bf16 GEMM (797) | peak GB | "
             "paper (Table 6) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['variant']} ({r['size']}) | {r['p50']:.4f} | {r['p20']:.4f}-"
                     f"{r['p80']:.4f} | {r['warmup_s']:.3f} | {r['tflops']:.3g} | "
                     f"{100 * r['ceiling_share']:.1f}% | {r['peak_gb']:.2f} | {r['paper']} |")
    lines += ["", "Configs: " + "; ".join(dict.fromkeys(r["config"] for r in rows)), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--size", type=int, default=None, help="view px (default 1024 paper, 64 tiny)")
    parser.add_argument("--views", type=int, default=None, help="K views (default 10 paper, 2 tiny)")
    parser.add_argument("--out", default=None, help="markdown table (default benchmarks/results/...)")
    parser.add_argument("--csv", default=None, help="results csv (default benchmarks/results/<dev>.csv)")
    args = parser.parse_args()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    tag = "h100" if "H100" in device_name else args.device
    rows = bench(args.device, args.preset, args.repeats, args.size, args.views)
    out = Path(args.out or f"benchmarks/results/models_image_vae_{tag}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(rows, device_name))
    csv = args.csv or f"benchmarks/results/{tag}.csv"
    for r in rows:
        cfg = r["config"] + f" flop={r['flop']:.4g}"
        append_result(csv, r["name"], r["variant"], "latency", "s", r["size"], r["p50"], r["p20"], r["p80"],
                      cfg, device_name)
        append_result(csv, r["name"], r["variant"], "throughput", "TFLOP/s", r["size"], r["tflops"], None,
                      None, cfg, device_name)
        append_result(csv, r["name"], r["variant"], "warmup", "s", r["size"], r["warmup_s"], None, None, cfg,
                      device_name)
        if args.device == "cuda":
            append_result(csv, r["name"], r["variant"], "peak_memory", "GB", r["size"], r["peak_gb"], None,
                          None, cfg, device_name)
    print(out.read_text())


if __name__ == "__main__":
    main()
