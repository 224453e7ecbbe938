"""Coarse mesh decoding (paper Table 5 row "coarse mesh decoding": VAE on 512^3 + marching cubes, 1.414 s).

What runs: the VecSet VAE decoder at full size with seeded random weights (bf16 on CUDA, fp32 on CPU):
latents -> K/V once, then hierarchical decoding 64 -> 128 -> 256 -> 512 (``engine.models.shape_decoding``)
and the narrow-band marching cubes on the device. Random weights have no surface, so the BAND is driven by
a real shape: the SDF of a shared asset (``mesh_to_sdf_gpu`` of the normalised asset at the final
resolution; its zero set is the dense marching-cubes mesh of ``benchmarks/geometry/dense_inputs``) decides
the active cells ("within ``--band-voxels`` voxels of the surface at each level") and gives the values
marching cubes meshes, while the network is evaluated on EVERY queried point (that is the cost). Variants:
full attention over all latents and FlashVDM top-k (k = preset default, 1024 of 3072).

Reported per variant: latents->KV, each level's query count and time, marching cubes, total, network
TFLOP/s from the analytic FLOPs and its share of the 797 TFLOP/s bf16 GEMM ceiling, peak memory; paper
1.414 s, issue target <= 0.4 s, TARGETS.md <= 0.3 s. Warm-up (first run, includes Triton/cuDNN setup) is
reported separately. Expected H100 time for the whole benchmark: ~30-60 s (guide SDF ~5 s, 2 variants x
(1 + repeats) runs).

Run:  python -m benchmarks.models.shape_vae --device cuda --preset paper --repeats 5 \
        --out benchmarks/results/models_shape_vae_h100.md --csv benchmarks/results/h100.csv
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import RESULTS, append_result, percentiles
from engine.models.shape_decoding import GridField, HierarchyConfig, VaeField, hierarchical_decode
from engine.models.shape_vae import (
    ShapeVaeConfig,
    ShapeVaeDecoder,
    decode_flops,
    init_random,
    query_flops,
)

GEMM_CEILING = 797e12
PAPER_S = 1.414
TARGET_ISSUE_S, TARGET_S = 0.4, 0.3


@dataclass(frozen=True)
class Preset:
    vae: str
    final_res: int
    coarse_res: int
    chunk: int


PRESETS = {"paper": Preset("hunyuan_v2_0", 512, 64, 4096), "tiny": Preset("tiny", 32, 8, 256)}


class GuidedField:
    """Runs the network on every point (result discarded) and returns the guide SDF's values."""

    def __init__(self, net: VaeField, guide: GridField) -> None:
        self.net, self.guide, self.device = net, guide, guide.device

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        self.net(points)
        return self.guide(points)


def _guide(asset: str, res: int, device: str, shared: str | None) -> GridField:
    from benchmarks.geometry.dense_inputs import shared_dir, source_mesh

    mesh = source_mesh(asset, shared_dir(shared))
    if device == "cuda":
        from engine.geometry.watertight_gpu import mesh_to_sdf_gpu

        values = mesh_to_sdf_gpu(mesh, res).grid.values
    else:
        from engine.geometry.watertight import mesh_to_sdf

        values = torch.from_numpy(mesh_to_sdf(mesh, res).grid.values)
    return GridField(values.to(device))


class _Clock:
    """Marks on the current stream: CUDA events on the GPU, perf_counter on the CPU."""

    def __init__(self, cuda: bool) -> None:
        self.cuda, self.marks = cuda, []

    def __call__(self, name: str) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append((name, ev))
        else:
            self.marks.append((name, time.perf_counter()))

    def spans(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        out = {}
        for (_, a), (name, b) in zip(self.marks, self.marks[1:]):
            out[name] = a.elapsed_time(b) / 1000.0 if self.cuda else b - a
        return out


def _run_once(model, z, guide, hcfg, topk, chunk, cuda):
    clock = _Clock(cuda)
    clock("start")
    kv = model.decode_latents(z)
    clock("latents_to_kv")
    net = VaeField(model, kv, topk=topk, chunk=chunk)
    result = hierarchical_decode(GuidedField(net, guide), hcfg, on_level=clock)
    verts, faces = result.mesh()
    clock("marching_cubes")
    spans = clock.spans()
    return spans, result.queries, int(faces.shape[0])


def bench(device: str = "cuda", preset: str = "paper", repeats: int = 10, asset: str = "bunny",
          band_voxels: float = 2.0, shared: str | None = None, seed: int = 0) -> list[dict]:
    """Rows (name, variant, metric, unit, size, p50, p20, p80, config) of the coarse decoding benchmark."""
    p = PRESETS[preset]
    cfg = ShapeVaeConfig.from_name(p.vae)
    cuda = device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    hcfg = HierarchyConfig(final_res=p.final_res, coarse_res=p.coarse_res, band_voxels=band_voxels)
    guide = _guide(asset, p.final_res, device, shared)
    model = init_random(ShapeVaeDecoder(cfg), seed).to(device=device, dtype=dtype).eval()
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(1, cfg.num_latents, cfg.embed_dim, generator=gen).to(device)          # [1, N, E]
    rows: list[dict] = []
    conf = (f"{cfg.name} N={cfg.num_latents} W={cfg.width} L={cfg.num_layers} {dtype} res {p.coarse_res}->"
            f"{p.final_res} band {band_voxels} vox brick {hcfg.brick} asset {asset}")
    for variant, topk in (("full", None), (f"topk{cfg.default_topk}", cfg.default_topk)):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            t0 = time.perf_counter()
            _run_once(model, z, guide, hcfg, topk, p.chunk, cuda)
            warm = time.perf_counter() - t0
            runs = [_run_once(model, z, guide, hcfg, topk, p.chunk, cuda) for _ in range(repeats)]
        spans = {k: [r[0][k] for r in runs] for k in runs[0][0]}
        queries, faces = runs[0][1], runs[0][2]
        totals = [sum(r[0].values()) for r in runs]
        net_s = [sum(v for k, v in r[0].items() if k != "marching_cubes") for r in runs]
        flops = decode_flops(cfg) + query_flops(cfg, sum(queries), topk, p.chunk)
        name = "coarse_mesh_decoding"
        rows.append(dict(name=name, variant=variant, metric="warmup", unit="s", size=p.final_res,
                         p50=warm, p20=None, p80=None, config=conf))
        for key, samples in spans.items():
            size = queries[hcfg.resolutions.index(int(key[1:]))] if key.startswith("r") else 1
            rows.append(dict(name=name, variant=variant, metric=key, unit="s", size=size,
                             p50=percentiles(samples)[0], p20=percentiles(samples)[1],
                             p80=percentiles(samples)[2], config=conf))
        rows.append(dict(name=name, variant=variant, metric="total", unit="s", size=sum(queries),
                         p50=percentiles(totals)[0], p20=percentiles(totals)[1], p80=percentiles(totals)[2],
                         config=conf + f"; paper {PAPER_S} s, target {TARGET_ISSUE_S}/{TARGET_S} s; "
                         f"faces {faces}; dense 512^3 would query {(p.final_res + 1) ** 3}"))
        tflops = [flops / s / 1e12 for s in net_s]
        rows.append(dict(name=name, variant=variant, metric="network_tflops", unit="TFLOP/s",
                         size=sum(queries), p50=percentiles(tflops)[0], p20=percentiles(tflops)[1],
                         p80=percentiles(tflops)[2],
                         config=conf + f"; share of {GEMM_CEILING / 1e12:.0f} TFLOP/s bf16 GEMM = "
                         f"{percentiles(tflops)[0] * 1e12 / GEMM_CEILING:.1%}"))
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
        rows.append(dict(name=name, variant=variant, metric="peak_memory", unit="GiB", size=p.final_res,
                         p50=peak, p20=None, p80=None, config=conf))
    del model, guide
    if cuda:
        torch.cuda.empty_cache()
    return rows


def markdown(rows: list[dict], device_name: str) -> str:
    lines = [f"# Coarse mesh decoding ({device_name})", "",
             f"Paper (Table 5, H100): {PAPER_S} s; issue target <= {TARGET_ISSUE_S} s; TARGETS.md <= "
             f"{TARGET_S} s.", "", f"Config: {rows[0]['config']}", "",
             "| variant | metric | size (queries) | p50 | p20 | p80 | unit |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        p20 = r["p50"] if r["p20"] is None else r["p20"]
        p80 = r["p50"] if r["p80"] is None else r["p80"]
        lines.append(f"| {r['variant']} | {r['metric']} | {r['size']} | {r['p50']:.4g} | {p20:.4g} | "
                     f"{p80:.4g} | {r['unit']} |")
    totals = [r for r in rows if r["metric"] == "total"]
    lines += ["", "Totals: " + "; ".join(f"{r['variant']} {r['p50']:.3f} s" for r in totals)
              + f" (paper {PAPER_S} s)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--asset", default="bunny")
    parser.add_argument("--band-voxels", type=float, default=2.0)
    parser.add_argument("--shared", default=None)
    parser.add_argument("--out", default=None, help="markdown table path")
    parser.add_argument("--csv", default=None, help="results csv (default benchmarks/results/<device>.csv)")
    args = parser.parse_args(argv)
    rows = bench(args.device, args.preset, args.repeats, args.asset, args.band_voxels, args.shared)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    csv = Path(args.csv) if args.csv else RESULTS / ("cpu.csv" if args.device == "cpu" else "h100.csv")
    for r in rows:
        append_result(csv, r["name"], r["variant"], r["metric"], r["unit"], r["size"], r["p50"], r["p20"],
                      r["p80"], r["config"], device_name)
    text = markdown(rows, device_name)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
