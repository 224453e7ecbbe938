"""Harmonic fill in torch (``harmonic_fill_gpu``) against the numpy/scipy reference (``harmonic_fill``) in
one run, on a weight-free texture's real fill problem.

Input (``--pictures``, default the crate): ``generate`` on the CPU reference path (flash preset, --faces,
--atlas, the picture's mirror on the back, ``inpaint_fill`` = harmonic) with the reference's
``harmonic_fill`` wrapped to capture its arguments: the k-nearest-filled atlas, the observed texels, the
texel positions and width. Then, on those arrays:
  * ``numpy``: ``harmonic_fill`` (wall clock, --repeats);
  * ``torch-cpu``: ``plan_harmonic`` (graph, components, matrix) and ``apply_harmonic`` (right-hand side,
    CG) on CPU tensors (wall clock, torch's intra-op threads as set by --threads);
  * ``torch-cuda`` (when a GPU is present): the same on CUDA, CUDA events, after one warm-up call;
  * parity: max |torch - numpy| over the atlas and the CG iterations of each.
Median / p20 / p80 over --repeats after one warm-up call each. Floor of one CG iteration at M unseen
texels: the SpMM reads ~5 nnz per row (float32 value, int64 column, a gathered [3] float32 row: ~M x 5 x
24 B) and ~10 elementwise passes touch ~3 [M, 3] float32 tensors each (~M x 360 B): ~0.1 GB at M = 200K,
~30 us of H100 bandwidth, the same order as its ~15 kernel launches (plus one host sync per 8 iterations).

    python -m benchmarks.texture.harmonic_fill_gpu --pictures typical_misc_crate --threads 1
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import append_result, cuda_times, percentiles, time_repeats

IMAGES = Path(os.environ.get("ASSETGEN_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "images"


def capture_case(picture: Path, faces: int, atlas: int) -> dict:
    """The arguments of the reference ``harmonic_fill`` call of a CPU weight-free ``generate``."""
    import engine.texture.harmonic_fill as hf
    from engine.config import InpaintFill, PipelineConfig
    from engine.runtime.engine import Engine

    base = PipelineConfig.from_name("flash").with_overrides(faces=faces, texture_size=atlas,
                                                             normal_map_size=512).for_device()
    config = replace(base, texture=replace(base.texture, mirror_back=True, inpaint_fill=InpaintFill.HARMONIC))
    case: dict = {}
    original = hf.harmonic_fill

    def spy(atlas_, known, valid, position, delta, **kw):
        case.update(atlas=atlas_.copy(), known=known.copy(), valid=valid.copy(), position=position.copy(),
                    delta=float(delta))
        return original(atlas_, known, valid, position, delta, **kw)

    hf.harmonic_fill = spy
    try:
        with Engine(config) as engine, tempfile.TemporaryDirectory() as tmp:
            engine.generate(picture, Path(tmp) / "out.glb", overlap=False)
    finally:
        hf.harmonic_fill = original
    if not case:
        raise SystemExit(f"{picture.name}: the harmonic fill did not run (no unseen texels?)")
    return case


def bench_case(case: dict, repeats: int) -> dict:
    """Time the reference and the torch version (CPU, and CUDA when present); parity figures."""
    import torch

    from engine.texture.harmonic_fill import harmonic_fill
    from engine.texture.harmonic_fill_gpu import apply_harmonic, plan_harmonic

    args = (case["atlas"], case["known"], case["valid"], case["position"])
    delta = case["delta"]
    st_ref: dict = {}
    times, ref = time_repeats(lambda: harmonic_fill(*args, delta, stats=st_ref), repeats, warmup=1)
    r: dict = {"numpy/fill": percentiles(times), "unseen": st_ref["harmonic_texels"],
               "iterations": {"numpy": st_ref["harmonic_iterations"]}, "max_abs_diff": {}}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        atlas, known, valid, pos = (torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in args)
        plan_fn = lambda: plan_harmonic(known & valid, valid, pos, delta)         # noqa: E731
        plan = plan_fn()
        apply_fn = lambda: apply_harmonic(plan, atlas)                              # noqa: E731
        if dev == "cuda":
            apply_fn()                                                              # warm-up (cuSPARSE)
            r["torch-cuda/plan"] = percentiles(cuda_times(plan_fn, repeats))
            r["torch-cuda/apply"] = percentiles(cuda_times(apply_fn, repeats))
        else:
            r["torch-cpu/plan"] = percentiles(time_repeats(plan_fn, repeats, warmup=1)[0])
            r["torch-cpu/apply"] = percentiles(time_repeats(apply_fn, repeats, warmup=1)[0])
        out, st = apply_fn()
        r["iterations"][f"torch-{dev}"] = st["harmonic_iterations"]
        r["max_abs_diff"][f"torch-{dev}"] = float(np.abs(out.cpu().numpy() - ref).max())
    return r


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", nargs="*", default=["typical_misc_crate"])
    parser.add_argument("--faces", type=int, default=8000)
    parser.add_argument("--atlas", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on the CPU")
    parser.add_argument("--csv", default=None, help="results csv (default: benchmarks/results/<device>.csv)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    if args.csv is None:
        args.csv = "benchmarks/results/" + ("h100.csv" if "H100" in gpu else f"{gpu.split()[-1].lower()}.csv")
    lines = ["| picture | variant | p50 ms | p20 ms | p80 ms |", "|---|---|---|---|---|"]
    for name in args.pictures:
        t0 = time.perf_counter()
        case = capture_case(IMAGES / f"{name}.png", args.faces, args.atlas)
        print(f"{name}: case captured in {time.perf_counter() - t0:.1f} s")
        r = bench_case(case, args.repeats)
        config = (f"picture={name},faces={args.faces},unseen={r['unseen']},iterations={r['iterations']},"
                  f"torch_threads={torch.get_num_threads()}")
        for key, value in r.items():
            if not key.count("/"):
                continue
            device = gpu if key.startswith("torch-cuda") else "cpu"
            append_result(args.csv, "harmonic_fill", f"{key}/{name}", "latency", "s", f"{args.atlas}^2",
                          *value, config, device)
            lines.append(f"| {name} | {key} | {value[0] * 1e3:.1f} | {value[1] * 1e3:.1f} | "
                         f"{value[2] * 1e3:.1f} |")
        lines.append(f"| {name} | {r['unseen']} unseen texels; CG iterations {r['iterations']}; "
                     f"max abs diff to numpy {r['max_abs_diff']} | | | |")
    print(f"harmonic fill on {gpu} (torch CPU threads {torch.get_num_threads()}), atlas {args.atlas}^2\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
