"""Does an AOTInductor package load and run on this machine, and with which loader? (issue 12)

    python -m trt_builds.diagnose --out DIR [--device cuda] [--networks shape_vae_query,dinov2]
                                  [--preset flash] [--timeout 300]

For a machine where packages crash (the H100 runs of 2026-12-07 ended in SIGSEGV at the first load). Every
package is built in this process and loaded and run in a fresh process (``packaged.run_in_fresh_process``,
fault handler on), so a crashing loader costs a child; each child's whole stdout + stderr is kept in
``DIR/<case>.<loader>.log`` (letters, digits, ``._-`` only) and the table is written to
``DIR/aoti_diagnose.md`` row by row (a later crash of this process keeps the rows before it).

  1. versions: torch, CUDA, cuDNN, Triton, Python, the device and its driver;
  2. a tiny package (sin + 1) loaded by each of ``packaged.LOADERS``: ``aoti_load_package`` as is, after
     importing ``torch._inductor.codecache`` (pytorch/pytorch#173706: torch 2.10+ fresh processes), and
     ``packaged.load_package`` (that import, then one ``load_pt2`` whose error is raised as it is);
  3. the tiny package built with ``aot_inductor.embed_kernel_binary`` (kernels inside the library instead of
     cubin files beside it), loaded by ours;
  4. a block of the engine's own layers (linear + the engine's attention + layer norm) in bf16, by ours;
  5. each ``--networks`` entry: the preset's paper-size package (random weights, bf16) in both weight
     layouts (``aoti.WEIGHT_LAYOUTS``), by ours, against its eager module.
Each row: built in s, loaded + run (ok / the child's last stderr line), max relative error against eager,
whether the child logged "Loading outdated pt2 file" (the loader's silent second load).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from trt_builds.packaged import LOADERS, max_relative_error, run_in_fresh_process


def versions(device: str) -> list[str]:
    lines = [f"python {platform.python_version()}", f"torch {torch.__version__}",
             f"CUDA (torch) {torch.version.cuda}", f"cuDNN {torch.backends.cudnn.version()}"]
    try:
        import triton

        lines.append(f"triton {triton.__version__}")
    except ImportError:
        lines.append("triton: not installed")
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        lines.append(f"GPU {props.name}, compute capability {props.major}.{props.minor}")
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            lines.append(f"driver {smi.stdout.strip() or smi.stderr.strip()}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            lines.append(f"driver: nvidia-smi failed ({exc})")
    return lines


class _Tiny(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sin() + 1


class _Block(torch.nn.Module):
    """The engine's layers in a row: linear projections, the engine's attention, layer norm."""

    def __init__(self, width: int = 256, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.out = torch.nn.Linear(width, width)
        self.norm = torch.nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from engine.models.attention import attention

        b, n, c = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return x + self.out(attention(q, k, v).transpose(1, 2).reshape(b, n, c))


def _build(module: torch.nn.Module, inputs: tuple, path: Path, **inductor) -> float:
    """Export + AOTInductor-package ``module`` to ``path`` (with the engine's SDPA backends);
    ``inductor``: ``aot_inductor`` options. Returns seconds."""
    from torch._inductor import aoti_compile_and_package
    from torch.nn.attention import sdpa_kernel

    from trt_builds.aoti import export_sdpa_backends

    t0 = time.perf_counter()
    options = {f"aot_inductor.{k}": v for k, v in inductor.items()}
    with sdpa_kernel(export_sdpa_backends()), torch.no_grad():
        program = torch.export.export(module, inputs, strict=False)
        aoti_compile_and_package(program, package_path=str(path), inductor_configs=options)
    return time.perf_counter() - t0


class Report:
    """The markdown table, appended and flushed row by row."""

    def __init__(self, out: Path, device: str) -> None:
        self.out, self.path = out, out / "aoti_diagnose.md"
        out.mkdir(parents=True, exist_ok=True)
        head = "\n".join(f"- {v}" for v in versions(device))
        self.path.write_text(f"## AOTInductor load diagnosis ({device})\n\n{head}\n\n"
                             "| case | loader | built s | result | max rel. error | outdated-pt2 fallback |\n"
                             "|---|---|---|---|---|---|\n")
        self.failures = 0

    def case(self, name: str, path: Path, inputs: tuple, ref: tuple, built: float, loader: str,
             timeout: float) -> None:
        log = self.out / (re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}.{loader}").strip("_") + ".log")
        got, err = run_in_fresh_process(path, inputs, self.out / "run", timeout=timeout, loader=loader,
                                        log=log)
        text = log.read_text(errors="replace") if log.is_file() else ""
        fallback = "yes" if "Loading outdated pt2 file" in text else "no"
        if got is None:
            self.failures += 1
            last = err.strip().splitlines()[-1] if err.strip() else "?"
            result, error = f"FAILED: {err.split(':')[0]}; {last[:160]}", "-"
        else:
            result = "ok"
            error = f"{max(max_relative_error(g, r) for g, r in zip(got, ref)):.2e}"
        row = f"| {name} | {loader} | {built:.1f} | {result.replace('|', '/')} | {error} | {fallback} |"
        with self.path.open("a") as fh:
            fh.write(row + "\n")
        print(row, flush=True)


def _outputs(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def run(out: Path, device: str, preset: str, networks: tuple[str, ...], timeout: float) -> int:
    report = Report(out, device)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(4096, device=device, generator=gen)
    tiny = out / "tiny.pt2"
    built = _build(_Tiny(), (x,), tiny)
    ref = (_Tiny()(x),)
    for loader in LOADERS:
        report.case("tiny sin+1", tiny, (x,), ref, built, loader, timeout)
    embedded = out / "tiny_embedded.pt2"
    try:
        built = _build(_Tiny(), (x,), embedded, embed_kernel_binary=True)
        report.case("tiny, embed_kernel_binary", embedded, (x,), ref, built, "ours", timeout)
    except Exception as exc:                      # an option this torch does not take is a finding
        with report.path.open("a") as fh:
            fh.write(f"| tiny, embed_kernel_binary | - | - | not built: {str(exc).splitlines()[0][:160]} "
                     "| - | - |\n")
    block = _Block().to(device, torch.bfloat16).eval()
    h = torch.randn(2, 256, 256, device=device, dtype=torch.bfloat16, generator=gen)
    with torch.inference_mode():
        ref = (block(h),)
    built = _build(block, (h,), out / "block.pt2")
    report.case("linear + attention + norm (bf16)", out / "block.pt2", (h,), ref, built, "ours", timeout)
    for network in networks:
        _network_cases(report, preset, network, device, timeout)
    return report.failures


def _network_cases(report: Report, preset: str, network: str, device: str, timeout: float) -> None:
    from trt_builds.aoti import PRECISIONS, WEIGHT_LAYOUTS, build_package, load_bundles
    from trt_builds.export_spec import export_module, export_specs, side_of

    plan, (shape_nets, tex) = load_bundles(preset, "bf16", 0, None, device, (side_of(network),))
    spec, dtype = export_specs(plan, shape_nets, tex)[network], PRECISIONS["bf16"]
    module = export_module(network, plan, shape_nets, tex)
    inputs = tuple(t.to(device) for t in spec.sample_inputs(dtype, seed=0))
    with torch.inference_mode():
        ref = _outputs(module(*inputs))
    for layout in WEIGHT_LAYOUTS:
        path = report.out / f"{network}.{layout}.pt2"
        t0 = time.perf_counter()
        build_package(module, spec, dtype, path, layout=layout)
        built = time.perf_counter() - t0
        name = f"{preset} {network} {layout} ({path.stat().st_size / 1e6:.0f} MB)"
        report.case(name, path, inputs, ref, built, "ours", timeout)
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the report and the child logs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=("cpu", "cuda"), help="where packages build and run (default: cuda if any)")
    parser.add_argument("--preset", default="flash", help="bucket of the --networks packages (default flash)")
    parser.add_argument("--networks", default="", help="comma-separated engine networks (default: none)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per child (default 300)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible; use --device cpu", file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")
    networks = tuple(n for n in args.networks.split(",") if n)
    failures = run(args.out, args.device, args.preset, networks, args.timeout)
    print(f"{failures} failed; report: {args.out / 'aoti_diagnose.md'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
