"""MeshGen coarse and refine DiT latency (paper Table 5 rows "coarse diffusion", "refine diffusion").

Random weights (speed does not depend on values), bf16 on CUDA (fp32 on CPU), torch.inference_mode, one
model resident at a time. Rows (name "meshgen"):
  coarse_context / refine_context    per-request cross-attention K/V (+ RoPE tables), once per request
  coarse_step_{eager,graph}          one DiT forward + DDIM update, batch 1 (distilled, CFG folded)
  coarse_25_steps_{eager,graph}      the distilled sampler: 25 steps from noise (paper: 1.193 s)
  coarse_teacher_10_steps_graph      teacher: CFG batched (batch 2) for 10 steps; the row
  coarse_teacher_100_steps_scaled    is 10x that (100 steps are not run, to keep the benchmark short)
  refine_step_{eager,graph}, refine_5_steps_graph (+ eager)   N = 16384, 5334 context tokens (paper 1.671 s)
  *_first_call                       the first sampler call of a runner (warm-up + CUDA-graph capture)
  *_compiled (--compile only)        torch.compile(model) inside the graph runner; compile time separate
TFLOP/s from the analytic FLOPs of ``engine.models.meshgen_dit.flops_per_forward``; "share" = (GEMM FLOPs
/ 797 + attention FLOPs / 640 TFLOP/s) / measured time (the measured H100 ceilings, shared/TARGETS.md);
"gemm_share" = all FLOPs / measured time / 797 (the issue's ">= 60% of the bf16 GEMM rate").
CPU check: ``python -m benchmarks.models.meshgen --device cpu --preset tiny --repeats 1``.
H100 (``--preset paper``): about 40 s (+ ~60 s with ``--compile``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import RESULTS, append_result, percentiles
from benchmarks.models.harness import ATTN_CEILING, GEMM_CEILING, device_timer, free_device
from engine.models.attention import attention_flops
from engine.models.dit_layers import build_on
from engine.models.meshgen_dit import MeshGenConfig, MeshGenDiT, flops_per_forward, param_count
from engine.sampling.ddim_vpred import DDIMConfig
from engine.sampling.guidance import GuidanceConfig, GuidanceMode, GuidedSampler

NAME = "meshgen"
PAPER = {"coarse_25_steps": 1.193, "refine_5_steps": 1.671}
TARGET = {"coarse_25_steps": "<= 0.8 s (issue), <= 0.5 s (TARGETS)", "refine_5_steps": "stage <= 1.5 s"}
PRESETS = {"paper": ("coarse", "refine"), "tiny": ("tiny", "tiny_refine")}
# distilled step counts (paper 5.3) and the teacher steps timed; the tiny CPU check runs 2 of each
STEPS = {"paper": {"coarse": 25, "refine": 5, "teacher": 10},
         "tiny": {"coarse": 2, "refine": 2, "teacher": 2}}


def _split_flops(cfg: MeshGenConfig, batch: int) -> tuple[int, int]:
    """(GEMM FLOPs, attention FLOPs) of one forward."""
    dh = cfg.width // cfg.heads
    attn = cfg.depth * (attention_flops(batch, cfg.heads, cfg.n_tokens, cfg.n_tokens, dh)
                        + attention_flops(batch, cfg.heads, cfg.n_tokens, cfg.n_context, dh))
    return flops_per_forward(cfg, batch) - attn, attn


def _row(variant: str, times: list[float], cfg: MeshGenConfig, batch: int, forwards: int, conf: str,
         scale: float = 1.0, **extra) -> dict:
    p50, p20, p80 = (scale * v for v in percentiles(times))
    row = dict(name=NAME, variant=variant, metric="latency", unit="s",
               size=f"N={cfg.n_tokens},M={cfg.n_context},B={batch}", p50=p50, p20=p20, p80=p80,
               config=conf, **extra)
    if forwards:
        gemm, attn = _split_flops(cfg, batch)
        row["step_tflop"] = (gemm + attn) / 1e12
        row["tflops"] = forwards * (gemm + attn) / p50 / 1e12
        row["share"] = forwards * (gemm / GEMM_CEILING + attn / ATTN_CEILING) / p50
        row["gemm_share"] = row["tflops"] * 1e12 / GEMM_CEILING
    for key, fig in PAPER.items():
        if variant.startswith(key):
            row["paper"], row["target"] = fig, TARGET[key]
    return row


def _bench_model(preset_name: str, stage: str, steps: dict[str, int], device: str, repeats: int,
                 compile_: bool) -> list[dict]:
    cfg = MeshGenConfig.from_name(preset_name)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    cuda = device.startswith("cuda")
    timer = device_timer(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = build_on(device, dtype, MeshGenDiT, cfg, seed=0).eval()
    g = torch.Generator(device=device).manual_seed(0)
    cond = torch.randn(1, cfg.n_context, cfg.context_dim, device=device, dtype=dtype, generator=g)
    z_T = torch.randn(1, cfg.n_tokens, cfg.latent_dim, device=device, generator=g)
    # refine: random lattice positions (RoPE cost does not depend on where the tokens sit)
    pos = torch.randint(0, 128, (cfg.n_tokens, 3), device=device, generator=g) if cfg.rope else None
    conf = f"preset={preset_name} dtype={str(dtype).removeprefix('torch.')} params={param_count(model)}"
    with torch.inference_mode():
        rows = _model_rows(model, cfg, stage, steps[stage], cond, z_T, pos, timer, repeats, conf)
        if stage == "coarse":
            rows += _teacher(model, cfg, steps["teacher"], cond, z_T, timer, repeats, conf)
        if compile_:
            rows += _compiled(model, cfg, stage, steps[stage], cond, z_T, pos, timer, repeats, conf)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2 ** 30
        rows.append(dict(name=NAME, variant=f"{stage}_peak_memory", metric="memory", unit="GiB",
                         size=f"N={cfg.n_tokens}", p50=peak, p20=None, p80=None, config=conf))
    del model
    free_device(device)
    return rows


def _model_rows(model, cfg, stage, steps, cond, z_T, pos, timer, repeats, conf) -> list[dict]:
    """Context, per-step and whole-sampler rows, eager then CUDA graph (first call reported apart)."""
    model.precompute_context(cond, pos)
    rows = [_row(f"{stage}_context", timer(lambda: model.precompute_context(cond, pos), repeats), cfg, 1, 0,
                 conf)]
    for mode, use_graph in (("eager", False), ("graph", True)):
        s = GuidedSampler(model, DDIMConfig(steps=steps), GuidanceConfig(GuidanceMode.FOLDED), use_graph)
        t_first = timer(lambda: s(cond, z_T, pos), 1)
        c = conf + f" runner={s.graph_mode(1)}"
        if use_graph and s.graph_mode(1) != "graph":
            print(f"{stage}: CUDA graph not used: {s.runner(1).reason}", flush=True)
        rows.append(_row(f"{stage}_{steps}_steps_{mode}_first_call", t_first, cfg, 1, steps, c))
        step, z, idx = s.runner(1), z_T.float(), s.ddim.indices[:1]
        step(z, idx)
        rows.append(_row(f"{stage}_step_{mode}", timer(lambda: step(z, idx), max(repeats, 3)), cfg, 1, 1, c))
        reps = max(1, min(repeats, 3 if stage == "refine" else 5))
        rows.append(_row(f"{stage}_{steps}_steps_{mode}", timer(lambda: s(cond, z_T, pos), reps), cfg, 1,
                         steps, c + f" ddim_steps={steps}"))
    return rows


def _teacher(model, cfg, steps, cond, z_T, timer, repeats, conf) -> list[dict]:
    """Teacher sampling: ``steps`` CFG-batched steps timed, 100 steps reported as 100 / steps times that."""
    s = GuidedSampler(model, DDIMConfig(steps=steps), GuidanceConfig(GuidanceMode.BATCHED), True)
    s(cond, z_T)
    t = timer(lambda: s(cond, z_T), max(1, min(repeats, 3)))
    c = conf + f" runner={s.graph_mode(1)} cfg=batched(2)"
    return [_row(f"coarse_teacher_{steps}_steps_graph", t, cfg, 2, steps, c),
            _row("coarse_teacher_100_steps_scaled", t, cfg, 2, 100,
                 c + f" scaled={100 / steps:g}x of {steps} steps", 100 / steps)]


def _compiled(model, cfg, stage, steps, cond, z_T, pos, timer, repeats, conf) -> list[dict]:
    """torch.compile(model) (default mode) inside our graph runner; compile time reported on its own."""
    compiled = torch.compile(model)
    s = GuidedSampler(compiled, DDIMConfig(steps=steps), GuidanceConfig(GuidanceMode.FOLDED), True)
    t0 = time.perf_counter()
    s(cond, z_T, pos)
    if z_T.is_cuda:
        torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    c = conf + f" runner={s.graph_mode(1)} torch.compile=default"
    t = timer(lambda: s(cond, z_T, pos), max(1, min(repeats, 3)))
    return [_row(f"{stage}_{steps}_steps_compiled_graph", t, cfg, 1, steps, c),
            _row(f"{stage}_compile_time", [compile_s], cfg, 1, 0, c)]


def bench(device: str = "cuda", preset: str = "paper", repeats: int = 10, compile_: bool = False
          ) -> list[dict]:
    """All rows (module docstring); coarse then refine, each freed before the next."""
    coarse, refine = PRESETS[preset]
    rows = _bench_model(coarse, "coarse", STEPS[preset], device, repeats, compile_)
    rows += _bench_model(refine, "refine", STEPS[preset], device, repeats, compile_)
    return rows


def write_markdown(rows: list[dict], path: str | Path, device_name: str) -> None:
    def f(r: dict, key: str, fmt: str) -> str:
        return fmt.format(r[key]) if r.get(key) is not None else ""

    lines = [f"# MeshGen DiT latency ({device_name})", "",
             "| variant | size | p50 | p20 | p80 | TFLOP/fwd | TFLOP/s | share of ceilings | of GEMM 797 "
             "| paper | target |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['size']} | {r['p50']:.4g} {r['unit']} | {f(r, 'p20', '{:.4g}')} "
                     f"| {f(r, 'p80', '{:.4g}')} | {f(r, 'step_tflop', '{:.3g}')} "
                     f"| {f(r, 'tflops', '{:.0f}')} "
                     f"| {f(r, 'share', '{:.0%}')} | {f(r, 'gemm_share', '{:.0%}')} "
                     f"| {f(r, 'paper', '{:.3f} s')} | {r.get('target', '')} |")
    lines += ["", "share of ceilings = (GEMM FLOPs / 797 + attention FLOPs / 640 TFLOP/s) / measured time; "
              "of GEMM 797 = achieved TFLOP/s / 797. Step rows include the DDIM update. "
              "coarse_teacher_100_steps_scaled scales the measured CFG-batched teacher run to 100 steps.",
              "Paper figures: Table 5 (H100, distilled: coarse 25 steps, refine 5 steps)."]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (compile time apart)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    out = Path(args.out or RESULTS / f"meshgen_{'h100' if cuda else 'cpu'}.md")
    csv = Path(args.csv or RESULTS / ("h100.csv" if cuda else "cpu.csv"))
    rows = bench(args.device, args.preset, args.repeats, args.compile)
    for r in rows:
        extra = " ".join(f"{k}={r[k]:.4g}" for k in ("tflops", "share", "gemm_share", "paper") if k in r)
        append_result(csv, r["name"], r["variant"], r["metric"], r["unit"], r["size"], r["p50"], r["p20"],
                      r["p80"], f"{r['config']} {extra}".strip(), device_name)
    write_markdown(rows, out, device_name)
    print(out.read_text())


if __name__ == "__main__":
    main()
