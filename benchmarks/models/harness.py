"""What the model benchmarks share: the timer for a device, freeing memory between models, one measured
case (warm-up, timed repeats, peak memory), its result rows against the measured ceilings, the markdown
table and the command line of the encoder / Hunyuan3D benchmarks.

Ceilings (shared/TARGETS.md, measured on the H100): bf16 GEMM 797 TFLOP/s, cuDNN SDPA ~640 TFLOP/s.
A case's ideal time is GEMM FLOPs / 797 + attention FLOPs / 640 TFLOP/s; its ceiling share is the ideal
time over the measured median.
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import RESULTS, append_result, cuda_times, percentiles, time_repeats

GEMM_CEILING, ATTN_CEILING = 797e12, 640e12
Timer = Callable[[Callable[[], object], int], list[float]]


def device_timer(device: str) -> Timer:
    """``timer(fn, repeats) -> seconds per call``: CUDA events on a CUDA device, wall clock elsewhere."""
    if device.startswith("cuda"):
        return cuda_times
    return lambda fn, repeats: time_repeats(fn, repeats, warmup=0)[0]


def free_device(device: str) -> None:
    """Drop the last model's memory and reset the peak counter before the next one."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def measure(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, list[float], float]:
    """(warm-up seconds, timed seconds, peak GB) of ``fn`` under inference_mode."""
    timer = device_timer(device)
    with torch.inference_mode():
        warm = timer(fn, 1)[0]
        times = timer(fn, repeats)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else float("nan")
    return warm, times, peak


def case_rows(name: str, variant: str, size: str, warm: float, times: list[float], peak: float,
              gemm_flops: int, attn_flops: int, config: str) -> list[dict]:
    """latency / warmup / tflops / ceiling_share / peak_mem rows of one case (``config`` is completed with
    the FLOP count and the attention share)."""
    p50, p20, p80 = percentiles(times)
    total = gemm_flops + attn_flops
    ideal = gemm_flops / GEMM_CEILING + attn_flops / ATTN_CEILING
    base = dict(name=name, variant=variant, size=size, config=config)
    return [dict(base, metric="latency", unit="s", p50=p50, p20=p20, p80=p80),
            dict(base, metric="warmup", unit="s", p50=warm, p20=None, p80=None),
            dict(base, metric="tflops", unit="TFLOP/s", p50=total / p50 / 1e12, p20=total / p80 / 1e12,
                 p80=total / p20 / 1e12),
            dict(base, metric="ceiling_share", unit="fraction", p50=ideal / p50, p20=None, p80=None),
            dict(base, metric="peak_mem", unit="GB", p50=peak, p20=None, p80=None)]


def case_markdown(rows: list[dict], title: str, intro: str, first_column: str) -> str:
    """One table line per (name, size) from ``case_rows`` rows."""
    lines = [title, "", intro, "",
             f"| {first_column} | size | latency s | warm-up s | TFLOP/s | ceiling share | peak GB | notes |",
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


def run_cli(description: str, default_out: str, bench: Callable[[str, str, int], list[dict]],
            markdown: Callable[[list[dict], str], str]) -> None:
    """``--device --preset --repeats --out --csv``: run ``bench``, append its rows, write the table."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="paper", choices=("paper", "tiny"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=default_out)
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
