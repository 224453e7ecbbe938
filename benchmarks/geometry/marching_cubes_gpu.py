"""Marching cubes at 512^3 on the GPU (Triton) against the CPU baselines measured in the same run.

Field: a 513^3 float32 SDF (torus + sphere with sinusoidal bumps, ~1M faces: the paper's dense-mesh size).
Floor: the kernels read the field twice (cell cases, edge flags) and once more around crossings, so the
bytes floor is ~2 x 513^3 x 4 B = 1.08 GB; at the measured ~3.0 TB/s copy rate that is ~0.36 ms.
Reports p50/p20/p80 of CUDA-event timings after warm-up (kernel compile time reported separately), the
share of the bandwidth floor, and baselines: our numpy reference and scikit-image (when installed).
Writes rows to benchmarks/results/<gpu>.csv and a markdown table to the path given by --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import append_result, cuda_times, percentiles
from triton_kernels.marching_cubes import marching_cubes_ref, marching_cubes_triton

COPY_TBPS = 3.0  # measured device-to-device copy rate on the H100 (shared/TARGETS.md)


def field(n: int) -> np.ndarray:
    x = np.linspace(-1, 1, n, dtype=np.float32)
    gx, gy, gz = np.meshgrid(x, x, x, indexing="ij")
    bumps = 0.03 * (np.sin(9 * gx) * np.sin(7 * gy) + np.sin(11 * gz))
    torus = np.sqrt((np.sqrt(gx**2 + gz**2) - 0.55) ** 2 + gy**2) - 0.25
    return (np.minimum(torus, np.sqrt(gx**2 + gy**2 + gz**2) - 0.35) + bumps).astype(np.float32)



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=513)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/marching_cubes_gpu.md")
    parser.add_argument("--csv", default="benchmarks/results/h100.csv")
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name()
    values = field(args.n)
    dev_values = torch.from_numpy(values).cuda()
    t0 = time.perf_counter()
    v, f = marching_cubes_triton(dev_values)
    torch.cuda.synchronize()
    first_call = time.perf_counter() - t0
    for _ in range(3):
        marching_cubes_triton(dev_values)
    gpu_t = cuda_times(lambda: marching_cubes_triton(dev_values), args.repeats)
    ref_t, ref_out = [], None
    for _ in range(2):
        t0 = time.perf_counter()
        ref_out = marching_cubes_ref(values)
        ref_t.append(time.perf_counter() - t0)
    same = np.array_equal(f.cpu().numpy().astype(np.int64), ref_out[1])
    rows = [("triton (ours)", gpu, percentiles(gpu_t)), ("numpy reference (ours)", "cpu", percentiles(ref_t))]
    try:
        from skimage.measure import marching_cubes as sk_mc

        sk_t = []
        for _ in range(2):
            t0 = time.perf_counter()
            sk_mc(values, 0.0)
            sk_t.append(time.perf_counter() - t0)
        rows.append(("scikit-image marching_cubes", "cpu", percentiles(sk_t)))
    except ImportError:
        pass
    floor = 2 * values.nbytes / (COPY_TBPS * 1e12)
    cells = f"{args.n - 1}^3"
    lines = [
        f"# Marching cubes, {cells} cells, {f.shape[0]} faces, {v.shape[0]} vertices",
        "",
        f"GPU: {gpu}. Triton first call (compile + run): {first_call:.2f} s. Faces identical to the "
        f"numpy reference: {same}. Bandwidth floor {floor * 1e3:.2f} ms (2 field reads at {COPY_TBPS} TB/s).",
        "",
        "| implementation | device | p50 ms | p20 ms | p80 ms | Mcells/s | share of floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, device, (p50, p20, p80) in rows:
        rate = (args.n - 1) ** 3 / p50 / 1e6
        share = f"{100 * floor / p50:.1f}%" if device != "cpu" else "-"
        lines.append(
            f"| {name} | {device} | {p50 * 1e3:.2f} | {p20 * 1e3:.2f} | {p80 * 1e3:.2f} | {rate:.0f} | "
            f"{share} |"
        )
        append_result(
            Path("benchmarks/results") / "h100.csv",
            "marching_cubes",
            name,
            "latency",
            "s",
            cells,
            p50,
            p20,
            p80,
            f"faces={f.shape[0]}",
            device,
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
