"""End to end on one GPU through the resident engine (issue 10), in named suites:

  weightfree  the weight-free path (silhouette prior, reference projection), warm engine: per-asset latency
              p50/p90, per-stage medians, critical path vs sum of stages.
  flash       every flash network at the paper's size with random weights built in memory (no checkpoint
  default     files; speed does not depend on values): the same rows, peak GPU memory, resident network
              memory; ``flash`` adds steady-state throughput with requests pipelined against the serial loop
              in the same run (assets/hour).
  ladder      in the manner of paper Table 8, each engine optimisation's cumulative effect, measured in one
              run on the weight-free path and the flash networks: a fresh engine per request (what one CLI
              process per picture pays, JIT caches warm), + resident engine, + stage overlap, + pipelining.
  cold        cold start in child processes: process start -> engine ready (built + warmed) and -> first
              asset, with an empty JIT cache folder and again with the same folder warm; weight-free and
              with every default-preset network (random weights).

Pictures: the shared pictures (``../shared/images`` or $ASSETGEN_SHARED/images), each also mirrored left to
right, so 2 x 10 = 20 distinct inputs; ``--pictures N`` takes the first N of that list. Every figure comes
from this run. Results: a markdown table per suite (``--out``), CSV rows (``--csv``). Usage:
    python -m benchmarks.end_to_end_gpu --suite weightfree flash --out-dir benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, append_result

TARGETS = {"flash": 5.0, "default": 12.0, "weightfree": 0.8, "throughput": 1000.0,
           "ready_networks": 30.0, "ready_weightfree": 10.0, "memory_gb": 60.0}


def shared_images() -> Path:
    root = Path(os.environ.get("ASSETGEN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    return root / "images"


def pictures(folder: Path, count: int) -> list[Path]:
    """The shared pictures and their mirror images (written into ``folder``), first ``count``."""
    from PIL import Image

    src = sorted(shared_images().glob("*.png"))
    if not src:
        raise SystemExit(f"no pictures in {shared_images()}")
    out = list(src)
    for p in src:
        mirrored = folder / f"{p.stem}_mirrored.png"
        Image.open(p).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
        out.append(mirrored)
    return out[:count]


def engine_config(preset: str, networks: str | None, cache_dir: str | None = None, precision: str = "auto",
                  compile_networks: bool = False):
    from engine.config import PipelineConfig

    cfg = PipelineConfig.from_name(preset).with_overrides(device="cuda", random_networks=networks,
                                                          cache_dir=cache_dir, precision=precision,
                                                          compile_networks=compile_networks)
    return cfg.for_device()


def _stats(values: list[float]) -> dict:
    a = np.asarray(values, np.float64)
    return dict(p50=float(np.median(a)), p90=float(np.percentile(a, 90)), p20=float(np.percentile(a, 20)),
                p80=float(np.percentile(a, 80)), n=len(a))


_T0 = time.perf_counter()


def process_age() -> float:
    """Seconds since this process started (Linux /proc: its start tick vs the uptime), interpreter start and
    imports included."""
    ticks = os.sysconf("SC_CLK_TCK")
    start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    return float(Path("/proc/uptime").read_text().split()[0]) - start


def cache_state() -> str:
    """'warm caches' when the engine's default JIT cache folder already holds compiled kernels, else
    'empty caches'."""
    from triton_kernels.jit_cache import default_cache_dir

    root = default_cache_dir()
    return "warm caches" if root.is_dir() and any(p.is_file() for p in root.rglob("*")) else "empty caches"


def log(msg: str) -> None:
    """A timestamped progress line on stderr (flushed): a run cut off at its time limit still says where
    it was."""
    print(f"[{time.perf_counter() - _T0:8.1f} s] {msg}", file=sys.stderr, flush=True)


def stage_log(label: str):
    """A ``Progress`` callback that logs each stage's start and end."""
    def progress(index: int, count: int, name: str, seconds: float | None) -> None:
        log(f"{label} {index}/{count} {name} " + ("..." if seconds is None else f"{seconds:.3f} s"))
    return progress


def run_requests(engine, inputs: list[Path], out: Path, overlap: bool = True, verbose: int = 1,
                 partial=None) -> list:
    """One request at a time; the first ``verbose`` requests log every stage, every request its wall.
    ``partial(results)`` is called after every 4th request (a run cut off keeps a table of what it did)."""
    results = []
    for i, p in enumerate(inputs):
        progress = stage_log(f"request {i}") if i < verbose else None
        results.append(engine.generate(p, out / f"{i}.glb", overlap=overlap, progress=progress))
        log(f"request {i} ({p.name}): critical path {results[-1].timer.wall():.3f} s")
        if partial is not None and (i + 1) % 4 == 0 and i + 1 < len(inputs):
            partial(results)
    return results


def latency_rows(name: str, results: list) -> dict:
    """Per-asset critical path and sum of stages, per-stage medians."""
    stages: dict[str, list[float]] = {}
    for r in results:
        for t in r.timer.timings:
            stages.setdefault(t.name, []).append(t.seconds)
    notes = [f"{t.name}: {t.note}" for t in sorted(results[0].timer.timings, key=lambda t: t.start)]
    return dict(suite=name, wall=_stats([r.timer.wall() for r in results]), notes=notes,
                sources=results[0].sources,
                sum=_stats([r.timer.total() for r in results]),
                stages={k: _stats(v) for k, v in stages.items()})


def suite_latency(preset: str, networks: str | None, inputs: list[Path], out: Path, throughput: int,
                  report, precision: str = "auto", compile_networks: bool = False) -> dict:
    """Latency over ``inputs``, then one serial profiled request (parts of each stage synchronised), then
    (``throughput`` > 0) pipelined throughput over that many pictures. ``report(row)`` is called after
    each part, so a run cut off at its limit keeps what it measured."""
    import torch

    from engine.runtime.engine import Engine

    torch.cuda.reset_peak_memory_stats()
    first_in_process, caches = not _ENGINES_BUILT, cache_state()
    _ENGINES_BUILT.append(preset)
    t0 = time.perf_counter()
    log(f"{preset} (networks: {networks}): building the engine ({caches})")
    engine = Engine(engine_config(preset, networks, precision=precision, compile_networks=compile_networks))
    build = time.perf_counter() - t0
    log(f"engine built in {build:.1f} s; resident networks {engine.models.memory_gib():.1f} GiB; "
        f"precision {engine.models.precision}; compiled {engine.models.compiled or 'none'}; "
        f"fused kernels {engine.models.fused or 'none'}")
    warm = engine.warmup(progress=stage_log("warm-up"))
    log(f"warm-up request {warm:.1f} s")
    ready = process_age() if first_in_process else None
    name = f"{preset}{'' if networks else ' weight-free'}"
    extra = dict(build_s=build, warmup_s=warm, resident_gb=engine.models.memory_gib(),
                 gpu=torch.cuda.get_device_name(), ready_s=ready, caches=caches)

    def partial(results):
        report({**latency_rows(name + " (partial: run cut off)", results), **extra,
                "peak_gb": torch.cuda.max_memory_allocated() / 2**30})

    t0 = time.perf_counter()
    row = latency_rows(name, run_requests(engine, inputs, out, partial=partial))
    serial = time.perf_counter() - t0
    row.update(extra, peak_gb=torch.cuda.max_memory_allocated() / 2**30)
    report(row)
    log("profiled request (serial, parts synchronised)")
    profiled = engine.generate(inputs[0], out / "profiled.glb", overlap=False, profile=True)
    row["profile"] = profiled.timer.table(f"serial profile of one request ({inputs[0].name})")
    log(row["profile"])
    report(row)
    if throughput:
        row["throughput"] = measure_throughput(engine, inputs[:throughput], out, serial / len(inputs))
        report(row)
    engine.close()
    del engine
    torch.cuda.empty_cache()
    return row


_ENGINES_BUILT: list[str] = []


def measure_throughput(engine, inputs: list[Path], out: Path, serial_per_asset: float) -> dict:
    """assets/hour: the latency loop just measured (one request at a time, ``serial_per_asset`` seconds
    each) vs ``inputs`` as a pipelined batch."""
    rows = {"n": len(inputs), "serial_assets_per_hour": 3600 / serial_per_asset}
    for k in (2,):
        t0 = time.perf_counter()
        items = list(engine.generate_many([(p, out / f"b{i}.glb") for i, p in enumerate(inputs)],
                                          max_in_flight=k))
        wall = time.perf_counter() - t0
        failed = [str(i.error) for i in items if i.error is not None]
        if failed:
            raise RuntimeError(f"pipelined batch failed: {failed[:3]}")
        rows[f"pipelined_{k}_assets_per_hour"] = 3600 * len(inputs) / wall
        log(f"pipelined ({k} in flight): {len(inputs)} assets in {wall:.1f} s")
    return rows


def suite_ladder(inputs: list[Path], out: Path, networks: str | None, preset: str) -> list[dict]:
    """Cumulative effect of each engine optimisation, one run."""
    from engine.runtime.engine import Engine

    cfg = engine_config(preset, networks)
    rows = []
    few = inputs[:3]
    t0 = time.perf_counter()
    for i, p in enumerate(few):                                    # a fresh engine per request
        log(f"ladder: fresh engine {i}")
        with Engine(cfg) as engine:
            engine.generate(p, out / f"fresh{i}.glb", overlap=False)
    rows.append(dict(step="fresh engine per request, stages serial", per_asset=(time.perf_counter() - t0)
                     / len(few), n=len(few)))
    with Engine(cfg) as engine:
        engine.warmup()
        for label, overlap in (("+ resident engine (networks, graphs, pools kept)", False),
                               ("+ stages overlapped within a request", True)):
            t0 = time.perf_counter()
            run_requests(engine, inputs, out, overlap=overlap)
            rows.append(dict(step=label, per_asset=(time.perf_counter() - t0) / len(inputs), n=len(inputs)))
        t0 = time.perf_counter()
        list(engine.generate_many([(p, out / f"p{i}.glb") for i, p in enumerate(inputs)], max_in_flight=2))
        rows.append(dict(step="+ requests pipelined (2 in flight)", per_asset=(time.perf_counter() - t0)
                         / len(inputs), n=len(inputs)))
    return rows


def cold_child(args: argparse.Namespace) -> None:
    """Child process: build + warm an engine, then one asset; prints JSON with the times since start."""
    t_start = float(args.t_start)
    from engine.runtime.engine import Engine

    engine = Engine(engine_config(args.preset, args.networks, args.cache_dir))
    engine.warmup()
    ready = time.time() - t_start
    engine.generate(args.picture, Path(args.cache_dir).parent / "cold.glb")
    first = time.time() - t_start
    print(json.dumps(dict(ready=ready, first=first)))


def suite_cold(picture: Path, tmp: Path, with_networks: bool = True) -> list[dict]:
    rows = []
    engines = (("weight-free", None), ("every default network", "paper"))
    for label, networks in engines if with_networks else engines[:1]:
        cache = tmp / f"cache_{networks or 'none'}"
        for state in ("empty caches", "warm caches"):
            cmd = [sys.executable, "-m", "benchmarks.end_to_end_gpu", "--cold-child", "--t-start",
                   repr(time.time()), "--preset", "default", "--cache-dir", str(cache),
                   "--picture", str(picture)]
            if networks:
                cmd += ["--networks", networks]
            log(f"cold start: {label}, {state}")
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
            if done.returncode != 0:
                raise RuntimeError(f"cold child failed: {done.stderr[-2000:]}")
            times = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(dict(engine=label, caches=state, **times))
            log(f"cold start: {label}, {state}: {times}")
    return rows


# ------------------------------------------------------------------------------------------------ report
def latency_markdown(row: dict, target: float) -> str:
    w, s = row["wall"], row["sum"]
    lines = [f"## {row['suite']} ({row['gpu']}, {w['n']} pictures after warm-up)", "",
             f"engine built in {row['build_s']:.1f} s, warm-up request {row['warmup_s']:.1f} s; peak GPU "
             f"memory {row['peak_gb']:.1f} GiB (resident networks {row['resident_gb']:.1f} GiB)", "",
             (f"Process start -> engine ready (networks built, every kernel compiled or loaded, graphs "
              f"captured): **{row['ready_s']:.1f} s** with {row['caches']} (the first engine of this "
              f"process; interpreter start and imports included)." if row.get("ready_s") is not None
              else f"({row['caches']}; not the first engine of its process: no process-start figure)"), "",
             "| stage | p50 s | p90 s |", "|---|---|---|"]
    lines += [f"| {k} | {v['p50']:.3f} | {v['p90']:.3f} |" for k, v in row["stages"].items()]
    lines += [f"| **sum of stages** | {s['p50']:.3f} | {s['p90']:.3f} |",
              f"| **critical path (wall)** | {w['p50']:.3f} | {w['p90']:.3f} |", "",
              f"Target p50 <= {target} s: **{'met' if w['p50'] <= target else 'MISSED'}** "
              f"({w['p50']:.3f} s)."]
    lines += ["", "First request's stage notes:", ""] + [f"- {n}" for n in row["notes"]]
    lines += [f"- {k} source: {v}" for k, v in row["sources"].items()]
    if "profile" in row:
        lines += ["", "Serial profile (one request, stages in turn, each part synchronised: where the time "
                      "goes, not a latency figure):", "", "```", row["profile"], "```"]
    if "throughput" in row:
        t = row["throughput"]
        lines += ["", f"| throughput ({t['n']} pictures pipelined; serial: the latency loop) | assets/h |",
                  "|---|---|"]
        lines += [f"| {k.replace('_assets_per_hour', '').replace('_', ' ')} | {v:.0f} |"
                  for k, v in t.items() if k != "n"]
        best = max(v for k, v in t.items() if k != "n")
        lines += ["", f"Target >= {TARGETS['throughput']:.0f} assets/hour: "
                      f"**{'met' if best >= TARGETS['throughput'] else 'MISSED'}** ({best:.0f})."]
    return "\n".join(lines) + "\n"


def write_rows(csv: str, row: dict) -> None:
    w = row["wall"]
    name = row["suite"].replace(" ", "_")
    append_result(csv, "end_to_end", name, "critical_path", "s", w["n"], w["p50"], w["p20"], w["p80"],
                  "warm engine, random paper-size weights where networks run", row["gpu"])
    append_result(csv, "end_to_end", name, "sum_of_stages", "s", w["n"], row["sum"]["p50"], row["sum"]["p20"],
                  row["sum"]["p80"], "warm engine", row["gpu"])
    append_result(csv, "end_to_end", name, "peak_memory", "GiB", w["n"], row["peak_gb"], None, None, "",
                  row["gpu"])
    for k, v in row.get("throughput", {}).items():
        if k == "n":
            continue
        append_result(csv, "end_to_end", name, k, "assets/hour", w["n"], v, None, None, "", row["gpu"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", nargs="+", default=["weightfree", "flash"],
                    choices=["weightfree", "flash", "default", "ladder", "cold", "cold-weightfree"])
    ap.add_argument("--pictures", type=int, default=20)
    ap.add_argument("--throughput-pictures", type=int, default=10,
                    help="pictures in the pipelined throughput batch (flash)")
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--csv", default=None)
    ap.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--t-start", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--preset", default="flash", help=argparse.SUPPRESS)
    ap.add_argument("--networks", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--picture", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp8", "int8"],
                    help="the DiTs' linear layers (engine --precision)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the DiT blocks (engine --compile)")
    args = ap.parse_args(argv)
    if args.cold_child:
        cold_child(args)
        return
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("end_to_end_gpu measures the GPU path: run it on a CUDA machine")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = args.csv or str(out_dir / "h100.csv")
    with tempfile.TemporaryDirectory(prefix="assetgen-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        inputs = pictures(tmp, args.pictures)
        for suite in args.suite:
            t0 = time.perf_counter()
            if suite in ("weightfree", "flash", "default"):
                networks = None if suite == "weightfree" else "paper"
                preset = "flash" if suite == "weightfree" else suite
                tag = _tag(suite, args)
                md = out_dir / f"end_to_end_gpu_{tag}.md"

                def report(row, md=md, target=TARGETS[suite]):
                    md.write_text(latency_markdown(row, target))
                    log(f"wrote {md}")

                row = suite_latency(preset, networks, inputs, tmp,
                                    args.throughput_pictures if suite == "flash" else 0, report,
                                    args.precision, args.compile)
                text = latency_markdown(row, TARGETS[suite])
                write_rows(csv, row)
            elif suite == "ladder":
                rows = suite_ladder(inputs, tmp, "paper", "flash")
                text = ("## ladder (flash, paper-size random networks)\n\n"
                        "| step | s per asset | n |\n|---|---|---|\n")
                text += "".join(f"| {r['step']} | {r['per_asset']:.3f} | {r['n']} |\n" for r in rows)
            else:
                rows = suite_cold(inputs[0], tmp, with_networks=suite == "cold")
                text = "## cold start (child processes, default preset)\n\n"
                text += "| engine | caches | start -> ready s | start -> first asset s |\n|---|---|---|---|\n"
                text += "".join(f"| {r['engine']} | {r['caches']} | {r['ready']:.1f} | {r['first']:.1f} |\n"
                                for r in rows)
            text += f"\n(suite ran {time.perf_counter() - t0:.0f} s)\n"
            tag = _tag(suite, args)
            (out_dir / f"end_to_end_gpu_{tag}.md").write_text(text)
            print(text, flush=True)


def _tag(suite: str, args: argparse.Namespace) -> str:
    """The result file's name part: the suite, its precision unless auto, ``compiled`` with --compile."""
    tag = suite if args.precision == "auto" else f"{suite}_{args.precision}"
    return f"{tag}_compiled" if args.compile else tag


if __name__ == "__main__":
    main()
