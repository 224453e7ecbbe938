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

import torch

from benchmarks.models.harness import case_markdown, case_rows, free_device, measure, run_cli
from engine.models.checkpoints import init_random
from engine.models.hunyuan3d_dit import Hunyuan3DDiT, Hunyuan3DDiTConfig, flops_per_forward, param_count
from engine.sampling.flow_euler import FlowEulerSampler, FlowSchedule, FlowScheduleKind, GuidanceMode

PEER_TURBO_FLASHVDM = "Hunyuan3D-2 turbo+FlashVDM shape total 0.70s (A100)"
PAPER_COARSE = "paper MeshGen coarse diffusion 1.193s (2.3B, 25 steps, H100)"


def _build(cfg: Hunyuan3DDiTConfig, device: str, dtype: torch.dtype) -> Hunyuan3DDiT:
    """Meta construction, then materialised on the device in ``dtype`` (no fp32 host copy), seeded."""
    with torch.device("meta"):
        model = Hunyuan3DDiT(cfg)
    return init_random(model.to(dtype).to_empty(device=device), seed=0).eval()


def _rows(name: str, variant: str, size: str, warm: float, times: list[float], peak: float,
          flops: dict[str, int], config: str, peer: str = "-") -> list[dict]:
    total, attn = flops["total"], flops["attention"]
    cfg = f"{config} gflop={total / 1e9:.0f} attn_share={attn / total:.2f} peer={peer}"
    return case_rows(name, variant, size, warm, times, peak, flops["gemm"], attn, cfg)


def _scaled(f: dict[str, int], k: int) -> dict[str, int]:
    return {key: k * v for key, v in f.items()}


def _cases(cfg: Hunyuan3DDiTConfig, guided: bool, n: int, l_: int, device: str, dtype: torch.dtype,
           repeats: int, variant: str, tag: str, cfg_steps: int) -> list[dict]:
    """Per-step forward and full sampling for one network (guided: guidance-embedded, else CFG)."""
    free_device(device)
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
    warm, times, peak = measure(lambda: model(x, t, step_cond, g), device, repeats)
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
    warm, times, peak = measure(lambda: sampler.sample(model, noise, cond, uncond, 5.0, mode), device, reps)
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
    free_device(device)
    rows += _cases(base, False, n, l_, device, dtype, repeats, variant, tag, steps)
    free_device(device)
    return rows


def markdown(rows: list[dict], gpu: str) -> str:
    return case_markdown(
        rows, f"# Hunyuan3D-2 shape DiT (v2-0 sizes) on {gpu}",
        "Random weights. Latency p50 [p20, p80]; ceiling share = ideal time at 797 TFLOP/s GEMM + "
        "640 TFLOP/s attention over the measured time. Peer / paper figures in the notes column.", "case")


def main() -> None:
    run_cli(__doc__.split("\n")[0], "benchmarks/results/models_hunyuan3d.md", bench, markdown)


if __name__ == "__main__":
    main()
