"""Package and C++ builds of the export benchmark (``benchmarks.models.exports``), off the main process.

Package builds: one spawned worker process per side of the bucket ("shape": the MeshGen bundle, "texture":
the TextureGen bundle), each holding only its own side's seeded random networks (``load_bundles(sides=)``:
the same weights as the main process's, every network is seeded on its own) and building its networks one
after another with ``trt_builds.aoti.build_package`` (torch.export + AOTInductor). Inductor compiles the
Triton kernels of a build in a pool of ``compile_threads`` processes; each worker gets its own CPU cores
(``cpu_plan``) and its own Inductor cache folder, whose large files (the weights baked into the ``.so``;
the package holds its own copy) are deleted after each build so that a bucket of paper-size packages fits
the scratch disk. After its bf16 networks a worker may try the FP8 package of its DiT (``fp8``): the
recipe applied in place as the engine does; if that export fails, once more with the activation quantiser
in plain torch (``quant_rows_ref``, the kernel's oracle), which Inductor compiles into its own kernel.
Each result comes back on a queue as soon as it exists: ("ready", side, seconds), ("built", Built),
("done", side).

C++ build: ``start_cpp_build`` configures and builds the repository's CMake project (the C++ runtime and
its example host) with ninja into a fresh folder, ``-j 2`` on 2 pinned cores (the issue's "clean build on
2 cores"), in the background; ``CppBuild.result`` waits for it.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import time
import traceback
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIG_FILE = 64 << 20  # bytes: Inductor cache files this large hold baked-in weights


@dataclass(frozen=True)
class Built:
    """One package build: ``error`` set (and ``file`` None) when it failed."""

    network: str
    recipe: str            # "norecipe" | "fp8"
    variant: str           # "engine" (the code as the engine runs it) | "torch-quant" (FP8 retry)
    file: str | None
    export_s: float
    compile_s: float
    size_mb: float
    error: str | None = None


def cpu_plan(n_workers: int) -> tuple[list[int], list[int], list[list[int]]]:
    """(main cores, C++ build cores, cores per worker) on this machine; all empty (no pinning) on a
    machine of fewer than 8 cores."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 8:
        return [], [], [[] for _ in range(n_workers)]
    cmake, rest = cpus[:2], cpus[2:]
    main, rest = rest[:max(2, len(cpus) // 4)], rest[max(2, len(cpus) // 4):]
    per = max(1, len(rest) // max(1, n_workers))
    return main, cmake, [rest[i * per:(i + 1) * per] for i in range(n_workers)]


def pin(cpus: list[int]) -> None:
    """This process (and the Inductor compile pool it starts) on ``cpus``."""
    import torch._inductor.config as inductor_config

    if cpus:
        os.sched_setaffinity(0, cpus)
        inductor_config.compile_threads = len(cpus)


def short_error(err: BaseException) -> str:
    """The exception's type and first non-empty line (at most 300 characters): what the table shows."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {(lines[0] if lines else '')[:300]}"


def _drop_big_files(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and path.stat().st_size >= BIG_FILE:
            path.unlink()


def _torch_quantiser(module) -> int:
    """Every ``QuantLinear`` of ``module`` quantises its activations with the plain-torch reference
    (``quant_rows_ref``) instead of the Triton kernel; returns how many layers."""
    import types

    from quant.formats import Format
    from quant.linear import QuantLinear
    from triton_kernels.quant_rows import quant_rows_ref

    def quantize_input(self, x2):  # QuantLinear.quantize_input without the kernel branch
        fmt = "int8" if self.fmt is Format.INT8 else "fp8"
        static = self.act_scale if self.fmt is Format.FP8_TENSOR else None
        return quant_rows_ref(x2, fmt, self.smooth, static)

    layers = [m for m in module.modules() if isinstance(m, QuantLinear)]
    for layer in layers:
        layer.quantize_input = types.MethodType(quantize_input, layer)
    return len(layers)


def _build(ctx: dict, net: str, recipe: str, variant: str) -> Built:
    """Export and compile one network of the worker's bundle into ``ctx['out']``."""
    import torch

    from trt_builds.aoti import PRECISIONS, arch_tag, artifact_name, build_package
    from trt_builds.export_spec import export_module

    plan, precision = ctx["plan"], ctx["precision"]
    module = export_module(net, plan, ctx["shape"], ctx["texture"])
    tag = recipe if variant == "engine" else f"{recipe}-torchquant"
    path = Path(ctx["out"]) / artifact_name(net, plan.preset, precision, arch_tag(ctx["device"]), tag)
    t0 = time.perf_counter()
    try:
        if variant == "torch-quant":
            _torch_quantiser(module)
        res = build_package(module, ctx["specs"][net], PRECISIONS[precision], path, layout=ctx["layout"])
        built = Built(net, recipe, variant, res.file, res.export_s, res.compile_s, path.stat().st_size / 1e6)
    except Exception as err:  # noqa: BLE001 -- any failure of export or compile is a result to report
        traceback.print_exc()
        built = Built(net, recipe, variant, None, time.perf_counter() - t0, 0.0, 0.0, short_error(err))
    finally:
        _drop_big_files(Path(ctx["cache"]))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(f"[build {ctx['side']}] {net} {tag}: "
          + (f"{built.export_s:.1f} s export, {built.compile_s:.1f} s compile, {built.size_mb:.0f} MB"
             if built.error is None else built.error), flush=True)
    return built


def side_worker(side: str, preset: str, precision: str, device: str, seed: int, out: str, scratch: str,
                networks: list[str], fp8: list[str], cpus: list[int], results, layout: str = "so") -> None:
    """Process body: build ``networks`` of one side, then the FP8 package of each of ``fp8``."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(scratch) / f"inductor_{side}")
    try:
        import torch

        from trt_builds.aoti import arch_tag, load_bundles, quantise_bundles
        from trt_builds.export_spec import export_specs

        pin(cpus)
        torch.set_num_threads(max(1, len(cpus)) if cpus else 1)
        t0 = time.perf_counter()
        plan, (shape, texture) = load_bundles(preset, precision, seed, None, device, (side,))
        if texture is not None:   # the empty-prompt context is computed; the encoders are not exported
            texture.t5 = texture.clip = None
        ctx = dict(side=side, plan=plan, precision=precision, device=device, out=out, shape=shape,
                   texture=texture, specs=export_specs(plan, shape, texture),
                   cache=os.environ["TORCHINDUCTOR_CACHE_DIR"], layout=layout)
        results.put(("ready", side, time.perf_counter() - t0))
        with torch.no_grad():
            for net in networks:
                results.put(("built", _build(ctx, net, "norecipe", "engine")))
            for net in fp8:
                done = quantise_bundles(shape, texture, "fp8", arch_tag(device), (net,))
                print(f"[build {side}] {net} fp8: {done.get(net, 'no recipe')}", flush=True)
                built = _build(ctx, net, "fp8", "engine")
                results.put(("built", built))
                if built.error is not None:
                    results.put(("built", _build(ctx, net, "fp8", "torch-quant")))
    except Exception as err:  # noqa: BLE001 -- reported to the main process, which goes on
        traceback.print_exc()
        results.put(("error", side, short_error(err)))
    finally:
        results.put(("done", side))


class Builders:
    """The side workers of one bucket: ``start``, then ``poll``/``wait`` for their messages."""

    def __init__(self, jobs: dict[str, tuple[list[str], list[str]]], preset: str, precision: str,
                 device: str, seed: int, out: Path, scratch: Path, cpus: list[list[int]],
                 layout: str = "so") -> None:
        ctx = get_context("spawn")
        self.results = ctx.Queue()
        # not daemonic: Inductor's compile pool starts processes of its own
        self.procs = {side: ctx.Process(target=side_worker, name=f"build-{side}",
                                        args=(side, preset, precision, device, seed, str(out), str(scratch),
                                              nets, fp8, cores, self.results, layout))
                      for (side, (nets, fp8)), cores in zip(jobs.items(), cpus)}
        self.running = set(self.procs)

    def start(self) -> None:
        for proc in self.procs.values():
            proc.start()

    def poll(self, timeout: float = 0.0) -> list[tuple]:
        """Messages that arrived (waiting at most ``timeout`` s for the first one)."""
        out = []
        try:
            while True:
                wait = timeout > 0 and not out
                msg = self.results.get(timeout=timeout) if wait else self.results.get_nowait()
                out.append(msg)
                if msg[0] == "done":
                    self.running.discard(msg[1])
        except queue.Empty:
            pass
        for side, proc in self.procs.items():   # a worker killed from outside sends no "done"
            if side in self.running and not proc.is_alive() and self.results.empty():
                self.running.discard(side)
                out.append(("error", side, f"worker exited with code {proc.exitcode}"))
        return out

    def stop(self) -> None:
        """End the workers (those still building are terminated) and free their GPU memory."""
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=30)
        self.running.clear()


@dataclass
class CppBuild:
    """A clean CMake + ninja build of the runtime and host, running in the background."""

    folder: Path
    proc: subprocess.Popen | None
    configure_s: float
    started: float
    cores: int
    error: str | None = None
    build_s: float | None = None

    @property
    def host(self) -> Path:
        return self.folder / "trt_builds" / "cpp" / "assetgen_host"

    def result(self, timeout: float) -> CppBuild:
        """Wait for the build (at most ``timeout`` s); sets ``build_s`` or ``error``."""
        if self.proc is None or self.build_s is not None:
            return self
        try:
            out, _ = self.proc.communicate(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.error = f"build did not finish within {timeout:.0f} s"
            return self
        self.build_s = time.perf_counter() - self.started
        if self.proc.returncode != 0:
            self.error = "build failed: " + " | ".join(out.strip().splitlines()[-3:])[:400]
        return self


def _cuda_hints() -> list[str]:
    """CMake hints for the CUDA toolkit that a CUDA torch's TorchConfig looks for (nvcc on PATH or
    /usr/local/cuda)."""
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").is_file()
                                    else None)
    if nvcc is None:
        return []
    root = Path(nvcc).resolve().parents[1]
    return [f"-DCUDAToolkit_ROOT={root}", f"-DCMAKE_CUDA_COMPILER={nvcc}"]


def start_cpp_build(folder: Path, cores: list[int]) -> CppBuild:
    """Configure (timed, waited for) and start the build (``-j 2``, on ``cores`` when given)."""
    import torch.utils

    if folder.exists():
        shutil.rmtree(folder)
    missing = [tool for tool in ("cmake", "ninja") if shutil.which(tool) is None]
    if missing:
        return CppBuild(folder, None, 0.0, 0.0, 0, f"{' and '.join(missing)} not found")
    pin_cores = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    t0 = time.perf_counter()
    prefix = f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"
    argv = ["cmake", "-S", str(REPO), "-B", str(folder), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", prefix]
    cfg = subprocess.run(argv + _cuda_hints(), capture_output=True, text=True, preexec_fn=pin_cores)
    configure_s = time.perf_counter() - t0
    if cfg.returncode != 0:
        tail = " | ".join((cfg.stdout + cfg.stderr).strip().splitlines()[-4:])[:400]
        return CppBuild(folder, None, configure_s, t0, len(cores), f"cmake configure failed: {tail}")
    started = time.perf_counter()
    proc = subprocess.Popen(["cmake", "--build", str(folder), "-j", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=pin_cores)
    return CppBuild(folder, proc, configure_s, started, len(cores) or os.cpu_count() or 0)
