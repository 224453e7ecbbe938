"""Hunyuan3D-2 shape DiT latency with random weights: per step, 5-step turbo and 50-step CFG sampling.

Cases (paper preset = v2-0 sizes: width 1024, 16 + 32 blocks, 3072 latents x 64, 1 + 37*37 = 1370 DINOv2-giant
tokens of 1536; bf16 on CUDA with the cuDNN SDPA backend first, fp32 on CPU; tiny preset on CPU for CI):
  h3d_dit_step          one forward, batch 1 (the guidance-distilled ``-fast``/``-turbo`` networks)
  h3d_dit_step_cfg      one forward, batch 2 (cond + zero uncond: the plain v2-0 network under CFG)
  h3d_turbo_5step       FlowEulerSampler, consistency grid (pcm 100), 5 evaluations, guidance embedded
  h3d_cfg_50step        FlowEulerSampler, Tencent's Euler grid, 50 steps = 49 evaluations (the last step
                        has length 0 and is skipped), CFG batched (tiny preset: 6 steps)
Per case: warm-up (first call) reported separately, median p20/p80 of CUDA-event timings, analytic FLOPs,
TFLOP/s, share of the measured ceilings (ideal = GEMM FLOPs / 797 TFLOP/s + attention FLOPs / 640 TFLOP/s,
over the measured time), peak memory. One network resident at a time. Peer figure: Hunyuan3D-2 turbo +
FlashVDM, shape total (5-step DiT + decoding), 0.70 s on an A100 (TARGETS.md); paper context: MeshGen coarse
diffusion 1.193 s (2.3B DiT, 4096 tokens, 25 steps, H100). Time on an H100: about 20 s at --repeats 10
(the 50-step case runs max(2, repeats // 4) times).

Usage: python -m benchmarks.models.hunyuan3d --device cuda --preset paper --repeats 10
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import RESULTS, append_result, cuda_times, percentiles
from engine.models.checkpoints import init_random
from engine.models.hunyuan3d_dit import Hunyuan3DDiT, Hunyuan3DDiTConfig, flops_per_forward, param_count
from engine.sampling.flow_euler import FlowEulerSampler, FlowSchedule, FlowScheduleKind, GuidanceMode

GEMM_CEILING, ATTN_CEILING = 797e12, 640e12
PEER_TURBO_FLASHVDM = "Hunyuan3D-2 turbo+FlashVDM shape total 0.70s (A100)"
PAPER_COARSE = "paper MeshGen coarse diffusion 1.193s (2.3B, 25 steps, H100)"


def _timer(device: str) -> Callable[[Callable[[], object], int], list[float]]:
    if device.startswith("cuda"):
        return cuda_times

    def cpu_times(fn: Callable[[], object], repeats: int) -> list[float]:
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    return cpu_times


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _build(cfg: Hunyuan3DDiTConfig, device: str, dtype: torch.dtype) -> Hunyuan3DDiT:
    """Meta construction, then materialised on the device in ``dtype`` (no fp32 host copy), seeded."""
    with torch.device("meta"):
        model = Hunyuan3DDiT(cfg)
    return init_random(model.to(dtype).to_empty(device=device), seed=0).eval()


def _measure(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, list[float], float]:
    timer = _timer(device)
    with torch.inference_mode():
        warm = timer(fn, 1)[0]
        times = timer(fn, repeats)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else float("nan")
    return warm, times, peak


def _rows(name: str, variant: str, size: str, warm: float, times: list[float], peak: float,
          flops: dict[str, int], config: str, peer: str = "-") -> list[dict]:
    p50, p20, p80 = percentiles(times)
    total, attn = flops["total"], flops["attention"]
    ideal = flops["gemm"] / GEMM_CEILING + attn / ATTN_CEILING
    cfg = f"{config} gflop={total / 1e9:.0f} attn_share={attn / total:.2f} peer={peer}"
    base = dict(name=name, variant=variant, size=size, config=cfg)
    return [dict(base, metric="latency", unit="s", p50=p50, p20=p20, p80=p80),
            dict(base, metric="warmup", unit="s", p50=warm, p20=None, p80=None),
            dict(base, metric="tflops", unit="TFLOP/s", p50=total / p50 / 1e12, p20=total / p80 / 1e12,
                 p80=total / p20 / 1e12),
            dict(base, metric="ceiling_share", unit="fraction", p50=ideal / p50, p20=None, p80=None),
            dict(base, metric="peak_mem", unit="GB", p50=peak, p20=None, p80=None)]


def _scaled(f: dict[str, int], k: int) -> dict[str, int]:
    return {key: k * v for key, v in f.items()}


def _cases(cfg: Hunyuan3DDiTConfig, guided: bool, n: int, l_: int, device: str, dtype: torch.dtype,
           repeats: int, variant: str, tag: str, cfg_steps: int) -> list[dict]:
    """Per-step forward and full sampling for one network (guided: guidance-embedded, else CFG)."""
    _free(device)
    model = _build(cfg, device, dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    b = 1 if guided else 2
    x = torch.randn(b, n, cfg.in_channels, generator=gen, device=device)
    cond = torch.randn(1, l_, cfg.context_in_dim, generator=gen, device=device, dtype=dtype)
    t = torch.full((b,), 0.5, device=device)
    g = torch.full((b,), 5.0, device=device) if guided else None
    step_cond = cond if guided else torch.cat((cond, torch.zeros_like(cond)))
    size = f"{n}lat+{l_}cond"
    params = f"params={param_count(cfg) / 1e9:.3f}B"
    per_step = flops_per_forward(cfg, n, l_, batch=b)
    warm, times, peak = _measure(lambda: model(x, t, step_cond, g), device, repeats)
    rows = _rows(f"h3d_dit_step{'' if guided else '_cfg'}{tag}", variant, size, warm, times, peak, per_step,
                 f"batch={b} {params}")
    if guided:
        sampler = FlowEulerSampler(5, FlowSchedule(FlowScheduleKind.CONSISTENCY, pcm_timesteps=100), device)
        mode, uncond, reps = GuidanceMode.EMBEDDED, None, repeats
        name, peer = "h3d_turbo_5step", PEER_TURBO_FLASHVDM
    else:
        sampler = FlowEulerSampler(cfg_steps, FlowSchedule(), device)
        mode, uncond, reps = GuidanceMode.CFG, torch.zeros_like(cond), max(2, repeats // 4)
        name, peer = f"h3d_cfg_{cfg_steps}step", PAPER_COARSE
    noise = x[:1]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    warm, times, peak = _measure(lambda: sampler.sample(model, noise, cond, uncond, 5.0, mode), device, reps)
    rows += _rows(name + tag, variant, size, warm, times, peak, _scaled(per_step, sampler.evaluations),
                  f"evaluations={sampler.evaluations} batch={b} {params}", peer)
    return rows


def bench(device: str = "cuda", preset: str = "paper", repeats: int = 10) -> list[dict]:
    """All cases; rows dict(name, variant, metric, unit, size, p50, p20, p80, config)."""
    if preset not in ("paper", "tiny"):
        raise ValueError(f"preset must be 'paper' or 'tiny', got {preset!r}")
    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    variant = "bf16_cudnn_sdpa" if cuda else "fp32_cpu"
    if preset == "tiny":
        base, n, l_, tag, steps = Hunyuan3DDiTConfig.tiny(), 64, 17, "_tiny", 6  # CI: few CFG steps
    else:
        base, n, l_, tag, steps = Hunyuan3DDiTConfig.v2_0(), 3072, 1 + 37 * 37, "", 50
    fast = Hunyuan3DDiTConfig.from_yaml_params({**base.__dict__, "guidance_embed": True})
    rows = _cases(fast, True, n, l_, device, dtype, repeats, variant, tag, steps)
    _free(device)
    rows += _cases(base, False, n, l_, device, dtype, repeats, variant, tag, steps)
    _free(device)
    return rows


def markdown(rows: list[dict], gpu: str) -> str:
    lines = [f"# Hunyuan3D-2 shape DiT (v2-0 sizes) on {gpu}", "",
             "Random weights. Latency p50 [p20, p80]; ceiling share = ideal time at 797 TFLOP/s GEMM + "
             "640 TFLOP/s attention over the measured time. Peer / paper figures in the notes column.",
             "", "| case | size | latency s | warm-up s | TFLOP/s | ceiling share | peak GB | notes |",
             "|---|---|---|---|---|---|---|---|"]
    by_key: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault((r["name"], r["size"]), {})[r["metric"]] = r
    for (name, size), m in by_key.items():
        lat = m["latency"]
        lines.append(f"| {name} | {size} | {lat['p50']:.4f} [{lat['p20']:.4f}, {lat['p80']:.4f}] | "
                     f"{m['warmup']['p50']:.3f} | {m['tflops']['p50']:.1f} | "
                     f"{m['ceiling_share']['p50']:.2f} | "
                     f"{m['peak_mem']['p50']:.2f} | {lat['config']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="paper", choices=("paper", "tiny"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/models_hunyuan3d.md")
    parser.add_argument("--csv", default=None, help="default: benchmarks/results/h100.csv or cpu.csv")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    gpu = torch.cuda.get_device_name() if cuda else "cpu"
    rows = bench(args.device, args.preset, args.repeats)
    csv_path = Path(args.csv) if args.csv else RESULTS / ("h100.csv" if cuda else "cpu.csv")
    for r in rows:
        append_result(csv_path, r["name"], r["variant"], r["metric"], r["unit"], r["size"], r["p50"],
                      r["p20"], r["p80"], r["config"], gpu)
    text = markdown(rows, gpu)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
