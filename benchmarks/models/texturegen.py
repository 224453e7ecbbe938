"""TextureGen multi-view DiT latency (paper Table 6 "Diffusion" row) with random weights.

Cases (paper preset: 30 blocks, width 3072, 24 heads, ~7.4 B parameters, bf16 on CUDA, fp32 on CPU):
  flash    768 px views -> 48 x 48 latents, CFG distilled: one pass of B = 1 grid per step, 4 steps.
           Paper (Flash) 4.420 s; issue target <= 3.0 s; shared/TARGETS.md <= 2.0 s.
  default  1024 px views -> 64 x 64 latents, CFG batched (cond + white reference, B = 2), 4 steps.
           Paper 10.455 s on 2 GPUs (one branch each); TARGETS <= 8 s on one GPU.
Per case: ``prepare`` (per request: geometry embedding, text context, cross-attention K/V of 30 blocks),
one denoising step, the 4-step sampler (``sample_texture_views``), the analytic FLOPs of a step, TFLOP/s,
the share of the measured ceilings (ideal time = GEMM FLOPs / 797 TFLOP/s + attention FLOPs / 640
TFLOP/s, divided by the measured time), peak memory. Same-run baseline: one layer's self-attention
(24 heads, Dh 128) as the structured sparse computation against full attention over the whole grid
(45,056 tokens at 1024 px), with both FLOP counts. Warm-up runs are reported separately.
Text context: 128 T5 tokens + 77 CLIP tokens. Time on an H100: about 45 s for both cases with
``--repeats 3`` (the 1024 px 4-step sampler is timed min(repeats, 2) times).

Usage: python -m benchmarks.models.texturegen --device cuda --preset paper --repeats 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import RESULTS, append_result, percentiles
from benchmarks.models.harness import ATTN_CEILING, GEMM_CEILING, device_timer, free_device
from engine.models.attention import attention, attention_flops
from engine.models.multiview_attention import (
    MultiViewAttentionPlan,
    dense_multiview_attention_flops,
    multiview_attention,
    multiview_attention_flops,
)
from engine.models.texturegen_dit import (
    TextureGenConfig,
    TextureGenDiT,
    build_texturegen,
    flops_per_forward,
    param_count,
)
from engine.sampling.texturegen_sampler import TextureSamplerConfig, sample_texture_views

NAME = "texturegen_dit"
T5_TOKENS, CLIP_TOKENS = 128, 77
# case -> (sampler preset, latent side at paper size, latent side at tiny size, paper s, target s)
CASES = {"flash": ("flash", 48, 6, 4.420, "<= 3.0 s issue, <= 2.0 s TARGETS"),
         "default": ("default", 64, 8, 10.455, "<= 8 s on one GPU (paper: 2 GPUs)")}


def _ideal_seconds(cfg: TextureGenConfig, batch: int, hw: int, n_ctx: int) -> tuple[float, float, float]:
    """(total FLOPs, attention FLOPs, ideal seconds at the measured ceilings) of one step."""
    total = flops_per_forward(cfg, batch, (hw, hw), n_ctx)
    t, dh = hw * hw // cfg.patch ** 2, cfg.width // cfg.heads
    plan_table = MultiViewAttentionPlan(cfg.num_views).table
    attn = cfg.depth * (multiview_attention_flops(batch, cfg.heads, t, dh, plan_table)
                        + attention_flops(batch, cfg.heads, cfg.num_slots * t, n_ctx, dh))
    return total, attn, (total - attn) / GEMM_CEILING + attn / ATTN_CEILING


def _row(variant, metric, unit, size, samples, config, extra=None) -> dict:
    p50, p20, p80 = percentiles(samples)
    return dict(name=NAME, variant=variant, metric=metric, unit=unit, size=size, p50=p50, p20=p20, p80=p80,
                config=config, **(extra or {}))


def _bench_case(case: str, cfg: TextureGenConfig, device: str, dtype: torch.dtype, preset: str,
                repeats: int) -> tuple[list[dict], tuple]:
    """Rows of one case (the model lives only inside this call) and (hw, batch, size, config)."""
    sampler_name, hw_paper, hw_tiny, paper_s, target = CASES[case]
    sampler = TextureSamplerConfig.from_name(sampler_name)
    hw = hw_paper if preset == "paper" else hw_tiny
    b = 2 if sampler_name == "default" else 1
    timer = device_timer(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    gen = torch.Generator(device=device).manual_seed(0)
    c, k = cfg.latent_channels, cfg.num_views
    geo = torch.randn(1, k, 2 * c, hw, hw, generator=gen, device=device)
    t5 = torch.randn(1, T5_TOKENS, cfg.t5_dim, generator=gen, device=device)
    clip = torch.randn(1, CLIP_TOKENS, cfg.clip_dim, generator=gen, device=device)
    noise = torch.randn(1, k, c, hw, hw, generator=gen, device=device)
    ref = torch.randn(1, c, hw, hw, generator=gen, device=device)
    white = torch.ones(c, hw, hw, device=device)
    grid = torch.randn(b, cfg.num_slots, c, hw, hw, generator=gen, device=device)
    t = torch.full((b,), 0.25, device=device)
    size = f"{hw * 16}px B={b} S={cfg.num_slots} T={hw * hw // cfg.patch ** 2}"
    conf = (f"preset={preset} dtype={str(dtype).split('.')[-1]} steps={sampler.steps} "
            f"mode={sampler.mode.value}")
    model = build_texturegen(cfg, device, dtype)
    rows = []
    with torch.inference_mode():
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        req = model.prepare(geo, t5, clip, repeat=b)
        model(grid, t, req)
        sync()
        rows.append(_row(case, "warmup_prepare_plus_step", "s", size, [time.perf_counter() - t0], conf))
        rows.append(_row(case, "prepare", "s", size, timer(lambda: model.prepare(geo, t5, clip, repeat=b),
                                                            repeats), conf))
        step = timer(lambda: model(grid, t, req), repeats)
        total, attn, ideal = _ideal_seconds(cfg, b, hw, T5_TOKENS + CLIP_TOKENS)
        p50 = percentiles(step)[0]
        rows.append(_row(case, "step", "s", size, step, conf,
                         dict(tflops=total / p50 / 1e12, share=ideal / p50, step_tflop=total / 1e12,
                              attn_tflop=attn / 1e12)))
        runs = max(1, min(repeats, 2 if case == "default" else 3))

        def sample():
            r = model.prepare(geo, t5, clip, repeat=b)
            return sample_texture_views(model.velocity_fn(r), noise, ref, sampler, white)

        full = timer(sample, runs)
        rows.append(_row(case, "diffusion_4_steps", "s", size, full, conf,
                         dict(paper=paper_s, target=target,
                              tflops=sampler.steps * total / percentiles(full)[0] / 1e12)))
        if device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() / 1e9
            rows.append(_row(case, "peak_memory", "GB", size, [peak], conf))
    return rows, (hw, b, size, conf)


def _attention_baseline(case, cfg, hw, b, device, dtype, repeats, size, conf) -> list[dict]:
    """One layer's self-attention: structured sparse vs full attention over the whole grid."""
    t, dh, s = hw * hw // cfg.patch ** 2, cfg.width // cfg.heads, cfg.num_slots
    gen = torch.Generator(device=device).manual_seed(1)
    q, kk, v = (torch.randn(b, s, t, cfg.heads, dh, generator=gen, device=device, dtype=dtype)
                for _ in range(3))
    plan = MultiViewAttentionPlan(cfg.num_views, device)
    timer = device_timer(device)
    flops_s = multiview_attention_flops(b, cfg.heads, t, dh, plan.table)
    flops_d = dense_multiview_attention_flops(b, cfg.heads, t, dh, s)
    qd, kd, vd = (x.reshape(b, s * t, cfg.heads, dh).transpose(1, 2) for x in (q, kk, v))
    rows = []
    with torch.inference_mode():
        for name, fn, fl in (("sparse", lambda: multiview_attention(q, kk, v, plan), flops_s),
                             ("full", lambda: attention(qd, kd, vd), flops_d)):
            fn()
            times = timer(fn, repeats)
            rows.append(_row(case, f"self_attention_layer_{name}", "s", size, times, conf,
                             dict(tflops=fl / percentiles(times)[0] / 1e12, attn_tflop=fl / 1e12)))
    return rows


def bench(device: str = "cuda", preset: str = "paper", repeats: int = 10) -> list[dict]:
    """All rows (see the module docstring); one model resident at a time, freed after each case."""
    cfg = TextureGenConfig.from_name(preset)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    rows = []
    for case in CASES:
        case_rows, (hw, b, size, conf) = _bench_case(case, cfg, device, dtype, preset, repeats)
        free_device(device)
        rows += case_rows + _attention_baseline(case, cfg, hw, b, device, dtype, repeats, size, conf)
        free_device(device)
    with torch.device("meta"):
        n_params = param_count(TextureGenDiT(cfg))
    rows.append(dict(name=NAME, variant="model", metric="parameters", unit="count", size=preset,
                     p50=float(n_params), p20=None, p80=None, config=f"preset={preset}"))
    return rows


def markdown(rows: list[dict], device_name: str) -> str:
    lines = [f"# TextureGen DiT latency ({device_name})", "",
             "| case | metric | p50 | p20 | p80 | TFLOP per call | TFLOP/s | share of ceilings | paper "
             "| target |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def f(key, fmt="{:.3f}"):
            return fmt.format(r[key]) if r.get(key) is not None else ""
        unit = "" if r["unit"] == "count" else f" {r['unit']}"
        lines.append(f"| {r['variant']} | {r['metric']} | {r['p50']:.4g}{unit} | {f('p20', '{:.4g}')} | "
                     f"{f('p80', '{:.4g}')} | {f('step_tflop', '{:.4g}')}"
                     f"{f('attn_tflop', ' (attn {:.4g})')} | "
                     f"{f('tflops', '{:.4g}')} | {f('share', '{:.0%}')} | "
                     f"{f('paper', '{:.3f} s')} | {r.get('target', '')} |")
    lines += ["", "share of ceilings = (GEMM FLOPs / 797 + attention FLOPs / 640 TFLOP/s) / measured time.",
              "self_attention_layer_full is the dense alternative (one layer, full attention over the whole "
              "grid), measured in the same run. diffusion_4_steps includes the per-request prepare."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    out = Path(args.out or RESULTS / f"texturegen_{'h100' if cuda else 'cpu'}.md")
    csv = Path(args.csv or RESULTS / ("h100.csv" if cuda else "cpu.csv"))
    rows = bench(args.device, args.preset, args.repeats)
    for r in rows:
        extra = " ".join(f"{k}={r[k]:.4g}" if isinstance(r[k], float) else f"{k}={r[k]}"
                         for k in ("tflops", "share", "step_tflop", "attn_tflop", "paper") if k in r)
        append_result(csv, r["name"], r["variant"], r["metric"], r["unit"], r["size"], r["p50"], r["p20"],
                      r["p80"], f"{r['config']} {extra}".strip(), device_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(rows, device_name))
    print(out.read_text())


if __name__ == "__main__":
    main()
