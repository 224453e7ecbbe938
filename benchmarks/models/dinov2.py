"""Conditioning encoders' latency with random weights: DINOv2 ViT-g/14 (registers) and the text encoders.

Cases (paper preset, batch 1, bf16 on CUDA with the cuDNN SDPA backend first, fp32 on CPU):
  dinov2_g14_reg  518 px (1374 tokens, coarse MeshGen condition) and 1022 px (5334 tokens, refine),
                  fused-qkv inference form; the 518 px case also times ``prepare_pixels`` from a 1024^2
                  uint8 image on the device + the encoder = the "preprocess + conditioning" row of paper
                  Table 5: 0.27 s there (it also covers segmentation), TARGETS <= 0.08 s.
  t5_xxl          T5 v1.1 XXL encoder (4.76B) at 77 and 256 tokens (TextureGen text context).
  clip_l14_text   CLIP ViT-L/14 text tower (123M) at 77 tokens.
Per case: warm-up (first call, includes the cached position/bias tables) reported separately, median
p20/p80 latency over ``repeats`` CUDA-event timings, analytic FLOPs, TFLOP/s, share of the measured
ceilings (ideal = GEMM FLOPs / 797 TFLOP/s + attention FLOPs / 640 TFLOP/s, over the measured time),
peak memory (torch.cuda.max_memory_allocated after a reset before each case). One model is resident at
a time. Time on an H100: about 30 s, mostly building the 4.76B-parameter T5 (``--repeats 10``).

Usage: python -m benchmarks.models.dinov2 --device cuda --preset paper --repeats 10
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmarks.models.harness import case_markdown, case_rows, free_device, measure, run_cli
from engine.models.attention import attention_flops
from engine.models.checkpoints import init_random
from engine.models.dinov2 import Dinov2Config, Dinov2Model, flops_per_forward, prepare_pixels
from engine.models.text_encoders import (
    ClipTextConfig,
    ClipTextEncoder,
    T5Encoder,
    T5EncoderConfig,
    clip_flops,
    t5_flops,
)

PAPER_CONDITIONING_S = 0.27
TARGET_CONDITIONING_S = 0.08


def _build(ctor: Callable[[], torch.nn.Module], device: str, dtype: torch.dtype) -> torch.nn.Module:
    """Construct directly on the device in the target dtype (no fp32 copy of a 4.76B model), seeded."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = ctor()
    finally:
        torch.set_default_dtype(previous)
    return init_random(model, seed=0).eval()


def _rows(name: str, variant: str, size: str, warm: float, times: list[float], peak: float, flops: int,
          attn_flops: int, config: str, paper: str = "-") -> list[dict]:
    cfg = f"{config} gflop={flops / 1e9:.0f} attn_share={attn_flops / flops:.2f} paper={paper}"
    return case_rows(name, variant, size, warm, times, peak, flops - attn_flops, attn_flops, cfg)


def _dinov2_cases(preset: str, device: str, dtype: torch.dtype, repeats: int, variant: str) -> list[dict]:
    cfg = Dinov2Config.tiny() if preset == "tiny" else Dinov2Config.giant_registers()
    sizes = (56, 98) if preset == "tiny" else (518, 1022)
    free_device(device)
    model = _build(lambda: Dinov2Model(cfg), device, dtype).fuse_qkv_()
    rows: list[dict] = []
    for px in sizes:
        n = 1 + cfg.num_register_tokens + (px // cfg.patch_size) ** 2
        pixels = torch.randn(1, 3, px, px, device=device, dtype=dtype)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        warm, times, peak = measure(lambda: model(pixels), device, repeats)
        attn = cfg.num_layers * attention_flops(1, cfg.num_heads, n, n, cfg.head_dim)
        name = "dinov2_g14_reg" if preset != "tiny" else "dinov2_tiny"
        rows += _rows(name, variant, f"{px}px", warm, times, peak, flops_per_forward(cfg, px), attn,
                      f"tokens={n} batch=1 fused_qkv")
    image = torch.randint(0, 256, (1024, 1024, 3), dtype=torch.uint8, device=device)
    px = sizes[0]
    warm, times, peak = measure(lambda: model(prepare_pixels(image, px, dtype)), device, repeats)
    n = 1 + cfg.num_register_tokens + (px // cfg.patch_size) ** 2
    attn = cfg.num_layers * attention_flops(1, cfg.num_heads, n, n, cfg.head_dim)
    rows += _rows("conditioning", variant, f"{px}px", warm, times, peak, flops_per_forward(cfg, px), attn,
                  "prepare_pixels(1024^2 uint8)+DINOv2", f"{PAPER_CONDITIONING_S}s (target "
                  f"<={TARGET_CONDITIONING_S}s)")
    return rows  # the model is freed with this frame; free_device() before the next case empties the cache


def _t5_cases(preset: str, device: str, dtype: torch.dtype, repeats: int, variant: str) -> list[dict]:
    rows: list[dict] = []
    t5_cfg = T5EncoderConfig.tiny() if preset == "tiny" else T5EncoderConfig.xxl()
    free_device(device)
    t5 = _build(lambda: T5Encoder(t5_cfg), device, dtype)
    for tokens in (77, 256) if preset != "tiny" else (8, 16):
        ids = torch.randint(0, t5_cfg.vocab_size, (1, tokens), device=device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        warm, times, peak = measure(lambda: t5(ids), device, repeats)
        attn = t5_cfg.num_layers * attention_flops(1, t5_cfg.num_heads, tokens, tokens, t5_cfg.d_kv)
        rows += _rows("t5_xxl" if preset != "tiny" else "t5_tiny", variant, f"{tokens}tok", warm, times, peak,
                      t5_flops(t5_cfg, tokens), attn, f"params={t5.param_count() / 1e9:.2f}B")
    return rows


def _clip_cases(preset: str, device: str, dtype: torch.dtype, repeats: int, variant: str) -> list[dict]:
    clip_cfg = ClipTextConfig.tiny() if preset == "tiny" else ClipTextConfig.vit_l14()
    free_device(device)
    clip = _build(lambda: ClipTextEncoder(clip_cfg), device, dtype)
    tokens = clip_cfg.max_positions
    ids = torch.randint(0, clip_cfg.vocab_size - 1, (1, tokens), device=device)
    ids[:, -1] = clip_cfg.eos_token_id
    warm, times, peak = measure(lambda: clip(ids), device, repeats)
    dh = clip_cfg.width // clip_cfg.num_heads
    attn = clip_cfg.num_layers * attention_flops(1, clip_cfg.num_heads, tokens, tokens, dh)
    return _rows("clip_l14_text" if preset != "tiny" else "clip_tiny_text", variant, f"{tokens}tok", warm,
                  times, peak, clip_flops(clip_cfg, tokens), attn, f"params={clip.param_count() / 1e6:.0f}M")


def bench(device: str = "cuda", preset: str = "paper", repeats: int = 10) -> list[dict]:
    """All cases; rows dict(name, variant, metric, unit, size, p50, p20, p80, config)."""
    if preset not in ("paper", "tiny"):
        raise ValueError(f"preset must be 'paper' or 'tiny', got {preset!r}")
    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    variant = "bf16_cudnn_sdpa" if cuda else "fp32_cpu"
    rows = []
    for cases in (_dinov2_cases, _t5_cases, _clip_cases):
        rows += cases(preset, device, dtype, repeats, variant)
        free_device(device)
    return rows


def markdown(rows: list[dict], gpu: str) -> str:
    return case_markdown(
        rows, f"# Conditioning encoders (DINOv2, T5, CLIP) on {gpu}",
        "Random weights, batch 1. Latency p50 [p20, p80]; ceiling share = ideal time at 797 TFLOP/s "
        "GEMM + 640 TFLOP/s attention over the measured time. The paper's figure in the last column.",
        "model")


def main() -> None:
    run_cli(__doc__.split("\n")[0], "benchmarks/results/models_conditioning.md", bench, markdown)


if __name__ == "__main__":
    main()
