"""Exported engines on one device (issue 12): each network as eager module, torch.compile and ``.pt2``
package, and the network chain as the Python engine, ``PackagedNetworks`` and the C++ host, in one run.

    python -m benchmarks.models.exports --preset flash --device cuda --out-dir DIR --csv DIR/h100.csv
    python -m benchmarks.models.exports --preset tiny --device cpu --out-dir DIR        # CPU smoke run

Seeded random networks at the bucket's sizes (``trt_builds.export_spec``: flash/default at paper size,
tiny the CI networks), bf16 on CUDA, float32 on the CPU. Phases, each printing progress and putting its
rows into DIR/exports_<preset>_<gpu>.md (rewritten whole after every row) and the CSV as it goes:
  1. builds (``export_builds``): the packages of the chain and of ``--networks``, one worker process per
     side of the bucket, in the background; meanwhile the C++ runtime's clean build runs on 2 pinned cores,
     and this process builds its own bundles and compiles each compared network with torch.compile (first
     call timed: compile time, reported apart from steady state);
  2. networks: once the builds are done (workers ended, the GPU quiet): each package loaded (load to first
     output), then eager / torch.compile / package timed on the same inputs, after a warm-up;
  3. chain (``export_chain``): Python engine vs PackagedNetworks vs the C example host;
  4. fp8: the FP8 packages the workers tried last (or why they could not be built), against eager FP8,
     torch.compile FP8 and the bf16 package.
``--budget-s``: a phase that would not fit the time left is skipped and listed under "Not measured".
``--packages DIR`` / ``--host PATH`` reuse built bf16/fp32 packages / a built host (the CPU test does).
Build artifacts live under ``--scratch``, never in ``--out-dir``.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import shutil
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch

from benchmarks.common import git_sha
from benchmarks.models import export_chain as chains
from benchmarks.models import export_report as rows
from benchmarks.models.export_builds import (
    Builders,
    Built,
    CppBuild,
    cpu_plan,
    pin,
    short_error,
    start_cpp_build,
)
from benchmarks.models.export_report import Report, stats
from benchmarks.models.export_timing import Case, Timer, compare, load_package
from trt_builds.aoti import (
    PRECISIONS,
    WEIGHT_LAYOUTS,
    BuildResult,
    arch_tag,
    load_bundles,
    quantise_bundles,
    recipe_path,
    write_manifest,
)
from trt_builds.export_spec import CHAIN, PRESETS, REFINE, export_module, export_specs, preset_plan, side_of
from trt_builds.packaged import read_manifest, run_in_fresh_process

# most valuable first: what a time-out leaves unmeasured is the end of this list
PRIORITY = ("meshgen_coarse", "texturegen", "image_vae_decode", "dinov2", "shape_vae_query",
            "meshgen_coarse_context", "shape_vae_kv", "image_vae_encode", "texturegen_prepare")
FP8_NETWORKS = ("meshgen_coarse", "texturegen")


def gpu_tag(device: str) -> str:
    if not device.startswith("cuda"):
        return "cpu"
    name = torch.cuda.get_device_name()
    return next((t.lower() for t in ("H100", "H200", "A100", "L40S") if t in name), "cuda")


def commit() -> str:
    """The ``COMMIT`` file of the working folder (a device copy has no git), else git's sha."""
    path = Path("COMMIT")
    return path.read_text().strip() if path.is_file() else git_sha()


class ExportBench:
    """One run (module docstring); ``run`` goes through the phases."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.t0 = args, time.perf_counter()
        self.cuda = args.device.startswith("cuda")
        self.device = torch.device("cuda:0" if args.device == "cuda" else args.device)
        self.precision = "bf16" if self.cuda else "fp32"
        self.dtype, self.plan = PRECISIONS[self.precision], preset_plan(args.preset)
        self.arch, self.scratch = arch_tag(self.device), Path(args.scratch)
        self.manifest: Path | None = manifest_path(Path(args.packages)) if args.packages else None
        self.pkg_dir = self.manifest.parent if self.manifest else self.scratch / "pt2"
        self.timer = Timer(self.cuda, args.seconds_per_variant or (1.0 if self.cuda else 0.2))
        self.built: dict[tuple[str, str, str], Built] = {}
        self.cases: dict[str, Case] = {}
        self.p50: dict[tuple[str, str], float] = {}            # (network, variant) -> s
        self.load_first: dict[str, float] = {}
        self.builders: Builders | None = None
        self.wanted: list[str] = []
        self.cpp: CppBuild | None = None
        tag = gpu_tag(args.device)
        out = Path(args.out_dir)
        name = torch.cuda.get_device_name() if self.cuda else f"cpu ({platform.processor() or 'x86-64'})"
        self.scratch.mkdir(parents=True, exist_ok=True)
        free, sha = shutil.disk_usage(self.scratch).free, commit()
        self.report = Report(out / f"exports_{args.preset}_{tag}.md", Path(args.csv or out / f"{tag}.csv"),
                             name, sha, f"Exported engines, {args.preset} bucket, {name}",
                             [f"device: {name}", f"torch: {torch.__version__}", f"commit: {sha}",
                              f"cores: {os.cpu_count()}; scratch {self.scratch}, {free / 2**30:.0f} GiB free",
                              "command: python -m benchmarks.models.exports " + " ".join(args.argv)],
                             [f"Seeded random networks at the {args.preset} bucket's sizes, "
                              f"{self.precision}; every figure from this run. Cells: p50 [p10, p90]."])

    # ------------------------------------------------------------------------------------------ utilities
    def left(self) -> float:
        budget = self.args.budget_s
        return math.inf if not budget else budget - (time.perf_counter() - self.t0)

    def until(self, reserve: float) -> float:
        """Seconds one may wait and still keep ``reserve`` of the budget (an hour without a budget)."""
        return max(1.0, min(3600.0, self.left() - reserve))

    def log(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f} s] {text}", flush=True)

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    @contextmanager
    def attempt(self, what: str):
        """Run a measurement; its failure (out of memory, a package that does not load or run, a host that
        exits) becomes a "Not measured" row and the run goes on."""
        try:
            yield
        except (RuntimeError, OSError, ValueError) as err:
            traceback.print_exc()
            self.report.skip(what, short_error(err))
            self.free()

    # ------------------------------------------------------------------------------------ phase 1: builds
    def start(self) -> None:
        args = self.args
        main_cpus, cmake_cpus, worker_cpus = cpu_plan(2)
        wanted = self.wanted = [n for n in PRIORITY if n in self.networks or (args.chain and n in CHAIN)]
        if self.manifest is not None:
            self.reuse_packages(self.manifest)
        else:
            fp8 = []
            for net in FP8_NETWORKS if args.recipe == "fp8" else ():
                path = recipe_path(net, "fp8", self.arch)
                if path.is_file():
                    fp8.append(net)
                else:
                    self.report.put("fp8", net, {"network": net, "outcome": f"no recipe {path.name}"})
            jobs = {side: ([n for n in wanted if side_of(n) == side], [n for n in fp8 if side_of(n) == side])
                    for side in ("shape", "texture")}
            jobs = {side: job for side, job in jobs.items() if job[0] or job[1]}
            self.pkg_dir.mkdir(parents=True, exist_ok=True)
            self.builders = Builders(jobs, args.preset, self.precision, str(self.device), args.seed,
                                     self.pkg_dir, self.scratch, worker_cpus, args.layout)
            self.builders.start()
            self.log(f"builders started: {', '.join(f'{s}: {j[0] + j[1]}' for s, j in jobs.items())}")
        if args.host:
            self.cpp = CppBuild(Path(args.host).parents[2], None, 0.0, 0.0, 0)
            self.report.skip("C++ clean build", f"reused host {args.host}")
        elif args.chain:
            self.cpp = start_cpp_build(self.scratch / "cpp_build", cmake_cpus)
            self.log(f"C++ build started (configure {self.cpp.configure_s:.1f} s)")
        pin(main_cpus)

    def reuse_packages(self, manifest: Path) -> None:
        import json

        _, packages = read_manifest(manifest)
        record = json.loads(manifest.with_suffix(".json").read_text())["packages"]
        for net, path in packages.items():
            rec = record[net]
            built = Built(net, "norecipe", "engine", path.name, rec["export_s"], rec["compile_s"],
                          path.stat().st_size / 1e6)
            self.on_built(built, note=f"reused ({manifest.name}; times from its .json)")

    def on_built(self, built: Built, note: str = "") -> None:
        self.built[(built.network, built.recipe, built.variant)] = built
        rows.put_build(self.report, built, self.precision, self.args.preset, note)

    def drain(self, timeout: float = 0.0) -> None:
        if self.builders is None:
            return
        for msg in self.builders.poll(timeout):
            if msg[0] == "built":
                self.on_built(msg[1])
            elif msg[0] == "ready":
                self.log(f"builder {msg[1]} holds its networks ({msg[2]:.1f} s)")
            elif msg[0] == "error":
                self.report.skip(f"{msg[1]} builds", msg[2])

    def load_networks(self) -> None:
        """This process's own bundles (the workers' twins) and the torch.compile of each compared network."""
        self.plan, (self.shape, self.tex) = load_bundles(self.args.preset, self.precision, self.args.seed,
                                                         None, str(self.device))
        self.tex.t5 = self.tex.clip = None      # the empty-prompt context is computed; free the encoders
        self.free()
        self.specs = export_specs(self.plan, self.shape, self.tex)
        self.log("bundles ready")
        for net in self.networks:
            self.drain()
            case = self.cases[net] = self.case(net)
            if self.cuda and self.left() < 250:
                self.report.skip(f"torch.compile {net}", "time budget")
                continue
            with self.attempt(f"torch.compile {net}"):
                case.compile(self.timer)
                self.log(f"torch.compile {net}: first call {case.compile_s:.1f} s")

    def case(self, net: str) -> Case:
        """``net``'s export module on this process's bundles and its sample inputs on the device."""
        inputs = tuple(x.to(self.device) for x in self.specs[net].sample_inputs(self.dtype, seed=1))
        return Case(export_module(net, self.plan, self.shape, self.tex), inputs)

    def finish_builds(self) -> None:
        """Wait for the bf16 builds while 35 % of the budget is left (20 % without the chain), for the FP8
        ones while 15 % more is."""
        budget = self.args.budget_s or 0.0
        while self.builders is not None and self.builders.running:
            pending = [n for n in self.wanted if (n, "norecipe", "engine") not in self.built]
            reserve = ((0.35 if self.args.chain else 0.2) + (0.0 if pending else 0.15)) * budget
            if self.left() <= reserve:
                break
            self.drain(timeout=min(5.0, self.until(reserve)))
        if self.builders is not None:
            if self.builders.running:
                self.report.skip(f"builds still running ({', '.join(sorted(self.builders.running))})",
                                 f"time budget: stopped with {self.left():.0f} s left")
            self.drain()
            self.builders.stop()
            self.free()
            self.write_manifest()
        if self.cpp is not None and self.cpp.proc is not None:
            self.cpp.result(self.until(0.25 * budget))
            rows.put_cpp_build(self.report, self.cpp)

    def write_manifest(self) -> None:
        done = {n: b for (n, r, _), b in self.built.items() if r == "norecipe" and b.error is None}
        missing = [n for n in CHAIN if n not in done]
        if missing:
            if self.args.chain:
                self.report.skip("network chain", f"packages not built: {', '.join(missing)}")
            return
        results = [BuildResult(n, done[n].file or "", done[n].export_s, done[n].compile_s) for n in CHAIN]
        self.manifest = write_manifest(self.pkg_dir, self.plan, self.precision, self.shape, self.tex,
                                       self.specs, results)

    def probe(self) -> bool:
        """Before this process loads a package: the smallest one built runs in a fresh process. If it
        fails there, the phases that load packages here are skipped and the reason is reported (a loader
        that crashes would otherwise end the whole run, its table unwritten)."""
        built = [b for (_, r, _), b in self.built.items() if r == "norecipe" and b.error is None and b.file]
        if not built:
            return True
        small = min(built, key=lambda b: b.size_mb)
        inputs = tuple(x.to(self.device) for x in self.specs[small.network].sample_inputs(self.dtype, seed=1))
        out, err = run_in_fresh_process(self.pkg_dir / small.file, inputs, self.scratch / "probe",
                                        timeout=self.until(60.0))
        if out is None:
            why = " / ".join(ln.strip() for ln in err.splitlines()[-6:] if ln.strip()).replace("|", "/")
            what = f"{small.network} ({small.size_mb:.0f} MB)"
            self.report.skip("package load, latency, chain and FP8 packages",
                             f"{what} failed in a fresh process: {why[-600:]}")
            self.log(f"probe: {small.network} failed in a fresh process:\n{err}")
            return False
        self.log(f"probe: {small.network} ran in a fresh process")
        return True

    # ---------------------------------------------------------------------------------- phase 2: networks
    def measure_networks(self) -> None:
        ranked = {n: PRIORITY.index(n) if n in PRIORITY else len(PRIORITY) for n, r, _ in self.built
                  if r == "norecipe"}
        for net in sorted(ranked, key=ranked.get):
            built = self.built[(net, "norecipe", "engine")]
            if built.error is not None:
                continue
            need = (15 + 3 * self.timer.target) if net in self.cases else 10
            if self.left() < need + (120 if self.args.chain and self.cuda else 0):
                self.report.skip(f"{net} load and latency", "time budget")
                continue
            with self.attempt(f"{net} load and latency"):
                self.measure_network(net, built)
            self.free()
        self.cases.clear()
        torch._dynamo.reset()
        self.free()

    def measure_network(self, net: str, built: Built) -> None:
        case = self.cases.get(net)
        inputs = case.inputs if case else self.case(net).inputs
        package, got, load_s = load_package(self.pkg_dir / (built.file or ""), inputs, self.timer)
        self.load_first[net] = load_s
        rows.put_load(self.report, net, self.precision, self.args.preset, load_s)
        if case is not None:
            self.compare(net, case, package, got, self.precision)

    def compare(self, net: str, case: Case, package, got, variant: str) -> dict[str, list[float]]:
        """Eager, package (and torch.compile) timed: CSV rows, and the table row of bf16/fp32 networks."""
        times, err = compare(case, package, got, self.timer)
        for name, t in times.items():
            self.p50[(net, f"{variant}.{name}")] = stats(t)["p50"]
            self.report.csv(f"export_{net}", f"{variant}.{name}", "latency", "s", case.shapes, t)
        if variant == self.precision:
            rows.put_network(self.report, net, case.shapes, times, case.compile_s, err)
        p50s = ", ".join(f"{k} {stats(t)['p50'] * 1e3:.3f} ms" for k, t in times.items())
        self.log(f"{net} {variant}: {p50s}, rel. err {err:.1e}")
        return times

    # ------------------------------------------------------------------------------------- phase 3: chain
    def measure_chain(self) -> None:
        if not self.args.chain or self.manifest is None:
            return
        if self.left() < (90 if self.cuda else 5):
            self.report.skip("network chain", "time budget")
            return
        grid = self.args.grid or self.plan.shape.grid_resolution
        inp = chains.chain_inputs(self.plan, self.tex.dit_cfg.num_views, grid=grid)
        reps = self.args.chain_repeats
        note = f"dense {grid + 1}^3 lattice, {reps} runs after 1 warm-up"
        self.log("chain: Python engine")
        engine = None
        with self.attempt("chain: Python engine"):
            engine = chains.engine_chain(self.plan, self.shape, self.tex, inp, reps)
            label = "Python engine (its samplers" + (", CUDA-graph steps)" if self.cuda else ")")
            self.put_chain("engine", label, engine, None, note, grid)
        self.free()
        if self.left() > (40 if self.cuda else 2):
            self.log("chain: PackagedNetworks")
            with self.attempt("chain: PackagedNetworks"):
                packaged = chains.packaged_chain(self.manifest, str(self.device), self.plan, inp, reps)
                label = "PackagedNetworks (Python over .pt2)"
                self.put_chain("packaged", label, packaged, engine, note, grid)
            self.free()
        else:
            self.report.skip("chain: PackagedNetworks", "time budget")
        host = self.cpp.host if self.cpp is not None else None
        if host is None or not host.is_file() or (self.cpp and self.cpp.error):
            self.report.skip("chain: C++ host", f"no host ({self.cpp.error if self.cpp else 'no build'})")
        elif self.left() > (40 if self.cuda else 2):
            self.log("chain: C++ host")
            with self.attempt("chain: C++ host"):
                cpp = chains.cpp_chain(host, self.manifest, str(self.device), inp, reps,
                                       self.scratch / "host_io", timeout=self.until(0.0))
                self.put_chain("cpp", "C++ host (C API, assetgen_host)", cpp, engine, note, grid)

    def put_chain(self, key: str, label: str, times, engine, note: str, grid: int) -> None:
        rows.put_chain(self.report, key, label, times, engine, note, self.args.preset, grid)

    # --------------------------------------------------------------------------------------- phase 4: fp8
    def measure_fp8(self) -> None:
        """Each FP8 package that was built, against eager FP8 (the recipe applied to this process's bundle,
        as the engine does), torch.compile FP8 (when time allows) and the bf16 package."""
        for (net, recipe, variant), built in list(self.built.items()):
            if recipe != "fp8" or built.error is not None:
                continue
            if self.left() < (60 if self.cuda else 5):
                self.report.skip(f"FP8 {net} {variant} latency", "time budget")
                continue
            with self.attempt(f"FP8 {net} {variant} latency"):
                self.measure_fp8_network(net, variant, built)
            torch._dynamo.reset()
            self.free()

    def measure_fp8_network(self, net: str, variant: str, built: Built) -> None:
        done = quantise_bundles(self.shape, self.tex, "fp8", self.arch, (net,))
        case = self.case(net)
        if self.left() > (180 if self.cuda else 5):
            with self.attempt(f"torch.compile {net} fp8"):
                case.compile(self.timer)
        package, got, load_s = load_package(self.pkg_dir / (built.file or ""), case.inputs, self.timer)
        times = self.compare(net, case, package, got, f"fp8.{variant}")
        bf16 = self.p50.get((net, f"{self.precision}.package"))
        rows.put_fp8(self.report, f"{net} {variant}", times, bf16, load_s, done.get(net, ""))

    def run(self) -> None:
        names = bucket_networks(self.plan)
        unknown = [n for n in self.args.networks if n not in names]
        if unknown:
            raise SystemExit(f"networks {unknown} are not in the {self.args.preset} bucket: {sorted(names)}")
        self.networks = self.args.networks
        try:
            self.start()
            self.load_networks()
            self.finish_builds()
            if self.probe():
                for phase in (self.measure_networks, self.measure_chain, self.measure_fp8):
                    phase()
                    rows.put_targets(self.report, self.load_first, self.args.preset)
        finally:
            if self.builders is not None:
                self.builders.stop()
        self.log(f"done: {self.report.path}")


def manifest_path(path: Path) -> Path:
    """A ``.manifest`` file, or the only one in a folder."""
    found = [path] if path.is_file() else sorted(path.glob("*.manifest"))
    if len(found) != 1:
        raise SystemExit(f"--packages {path}: expected one .manifest, found {len(found)}")
    return found[0]


def bucket_networks(plan) -> set[str]:
    """The networks of the bucket, from the preset's flags (before any network is built)."""
    return set(CHAIN) | (set(REFINE) if plan.shape.refine else set()) | \
        ({"super_resolution"} if plan.texture.super_resolution else set())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.models.exports",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=PRESETS, default="flash")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out-dir", required=True, help="the markdown table (and the CSV by default), flat")
    ap.add_argument("--csv", default=None, help="results rows (default OUT_DIR/<gpu>.csv)")
    ap.add_argument("--networks", default=",".join(PRIORITY),
                    help="networks compared one by one (eager / torch.compile / package), most wanted first")
    ap.add_argument("--no-chain", dest="chain", action="store_false", help="skip the chain and the C++ build")
    ap.add_argument("--recipe", choices=("fp8", "none"), default="fp8", help="try the FP8 packages too")
    ap.add_argument("--layout", choices=tuple(WEIGHT_LAYOUTS), default="so",
                    help="where each package keeps its weights (trt_builds.aoti.WEIGHT_LAYOUTS)")
    ap.add_argument("--budget-s", type=float, default=0.0, help="whole-run time budget (0: none)")
    ap.add_argument("--seconds-per-variant", type=float, default=0.0, help="timed seconds per variant")
    ap.add_argument("--chain-repeats", type=int, default=3)
    ap.add_argument("--grid", type=int, default=0, help="dense lattice G of the chain (default: 128; "
                    "the bucket's own for tiny)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random networks")
    ap.add_argument("--scratch", default="/tmp/assetgen_exports", help="packages, builds, host files")
    ap.add_argument("--packages", default=None, help="reuse this manifest's packages (no package builds)")
    ap.add_argument("--host", default=None, help="reuse this built assetgen_host (no C++ build)")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.networks = tuple(n for n in args.networks.split(",") if n)
    if not args.grid and args.preset != "tiny":
        args.grid = 128
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ExportBench(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
