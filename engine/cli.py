"""``assetgen``: generate (image -> GLB), process (mesh -> GLB), info (GLB contract), serve (HTTP jobs).

User errors print one line ``error: <problem> (fix: <fix>)`` and exit with status 2; no output file is
left behind (the GLB writer writes a temporary file and renames it at the end).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from engine.config import Device, PipelineConfig
from engine.errors import AssetGenError, ConfigError
from engine.service.config import add_serve_arguments

EXIT_USER_ERROR = 2


def _config(args: argparse.Namespace) -> PipelineConfig:
    config = PipelineConfig.from_name(args.preset).with_overrides(
        faces=args.faces,
        texture_size=args.texture_size,
        normal_map_size=args.normal_map_size,
        device=args.device,
        seed=getattr(args, "seed", None),
        placement=args.placement,
        uv_method=getattr(args, "uv", None),
        hidden_faces=getattr(args, "hidden_faces", None),
        shape_model=getattr(args, "shape_model", None),
        weights=getattr(args, "weights", None),
        random_networks=getattr(args, "random_networks", None),
        cache_dir=args.cache_dir,
        max_in_flight=getattr(args, "max_in_flight", None),
        precision=getattr(args, "precision", None),
        remove_floaters=getattr(args, "remove_floaters", None),
        compile_networks=getattr(args, "compile", None),
        fused_kernels=getattr(args, "fused_kernels", None),
    )
    if config.runtime.device is Device.CUDA:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was asked for but no CUDA GPU is visible to torch",
                "run with --device cpu, or install a CUDA build of torch on a GPU machine",
            )
    return config.for_device()


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


EXAMPLE_PICTURE = "example_crate.png"  # engine/data/, MIT (microsoft/TRELLIS), see its LICENSE file


def example_picture() -> Path:
    """The example picture shipped inside the package (a crate, RGBA), for a first run without inputs."""
    from importlib.resources import files

    return Path(str(files("engine") / "data" / EXAMPLE_PICTURE))


def _pictures(items: list[str], example: bool = False) -> list[Path]:
    """The pictures named on the command line: files as given, folders expanded to their pictures; with
    ``example`` the bundled example picture first."""
    if not items and not example:
        raise ConfigError("no picture given", "name a picture or folder, or pass --example for the "
                          "bundled example")
    out: list[Path] = [example_picture()] if example else []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise ConfigError(f"folder '{path}' holds no picture ({', '.join(IMAGE_SUFFIXES)})",
                                  "point at a folder of pictures or name the files")
            out.extend(found)
        else:
            out.append(path)
    return out


def _batch_outputs(pictures: list[Path], output: str) -> list[Path]:
    """One GLB per picture: ``-o FILE.glb`` for a single picture, ``-o FOLDER`` (created when its parent
    exists) for several, each output named after its picture."""
    out = Path(output)
    if len(pictures) == 1 and out.suffix.lower() == ".glb":
        return [out]
    if out.suffix.lower() == ".glb":
        raise ConfigError(f"{len(pictures)} pictures but -o names one file '{out}'",
                          "give -o a folder; each picture gets FOLDER/<name>.glb")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o '{out}' is a file, not a folder", "give -o a folder for several pictures")
    if not out.exists():
        if not out.parent.is_dir():
            raise ConfigError(f"output folder '{out.parent}' does not exist",
                              "create it first or choose another -o")
        out.mkdir()
    names = [out / f"{p.stem}.glb" for p in pictures]
    clashes = sorted({n.name for n in names if names.count(n) > 1})
    if clashes:
        raise ConfigError(f"several pictures would write {', '.join(clashes)}",
                          "rename the pictures or run them in separate folders")
    return names


def _progress(index: int, count: int, name: str, seconds: float | None, prefix: str = "") -> None:
    if seconds is None:
        print(f"{prefix}[{index}/{count}] {name} ...", file=sys.stderr, flush=True)
    else:
        print(f"{prefix}[{index}/{count}] {name} done in {seconds:.2f} s", file=sys.stderr, flush=True)


def _report(result, show_timings: bool, notes: bool = True) -> None:
    for key, value in result.sources.items():
        print(f"{key} source: {value}")
    if notes:
        for note in result.notes:
            print(f"note: {note}")
    for warning in result.warnings:
        print(f"note: {warning}")
    mesh = result.mesh
    print(
        f"wrote {result.output} ({mesh.num_faces} faces, {mesh.num_vertices} vertices, base colour "
        f"{mesh.base_color.shape[1]}^2, normal map {mesh.normal_map.shape[1]}^2)"
    )
    if show_timings:
        print(result.timer.table())


@contextmanager
def _engine(config: PipelineConfig):
    """The resident engine for one command; on Ctrl-C / SIGTERM it starts no further stage and lets an
    output write in progress finish (the file is then complete or absent), then the interrupt goes on."""
    from engine.runtime.engine import Engine

    engine = Engine(config)
    try:
        yield engine
    except (KeyboardInterrupt, SystemError) as err:
        if _is_interrupt(err):
            engine.interrupt()
        raise
    finally:
        engine.close()


def _segmenter(value: str | None) -> str | None:
    if value is not None and value not in ("alpha", "grabcut") and not value.startswith("onnx:"):
        return f"onnx:{value}"  # a model path
    return value


def _cmd_generate(args: argparse.Namespace) -> int:
    from engine.runtime.engine import check_output

    config = _config(args)
    pictures = _pictures(args.images, args.example)
    outputs = _batch_outputs(pictures, args.output)
    args.planned_outputs = outputs
    if len(pictures) == 1:
        check_output(outputs[0])
    _check_preview(args)
    print(f"preset {config.preset.value}, device {config.runtime.device.value}, budget "
          f"{config.geometry.faces} faces, {len(pictures)} picture(s)", file=sys.stderr)
    with _engine(config) as engine:
        if len(pictures) == 1:
            result = engine.generate(pictures[0], outputs[0], segmenter=_segmenter(args.segmenter),
                                     progress=_progress)
            _report(result, args.timings)
            _preview(args, result)
            return 0
        return _generate_batch(engine, pictures, outputs, args)


def _generate_batch(engine, pictures: list[Path], outputs: list[Path], args: argparse.Namespace) -> int:
    """Pipelined batch: progress per asset and stage, one line per finished asset, per-picture errors."""
    n = len(pictures)

    def progress(i: int):
        return lambda index, count, name, seconds: _progress(index, count, name, seconds,
                                                             f"[asset {i + 1}/{n} {pictures[i].name}] ")

    failed, t0 = 0, time.perf_counter()
    items = engine.generate_many(zip(pictures, outputs), segmenter=_segmenter(args.segmenter),
                                 progress=progress)
    for k, item in enumerate(items):
        if item.error is not None:
            failed += 1
            print(f"error: {item.picture}: {_message(item.error)}", file=sys.stderr, flush=True)
            continue
        _report(item.result, args.timings, notes=k == 0)
        _preview(args, item.result, several=True)
    wall = time.perf_counter() - t0
    print(f"{n - failed} of {n} assets written in {wall:.1f} s ({3600 * (n - failed) / max(wall, 1e-9):.0f} "
          f"assets/hour)")
    return EXIT_USER_ERROR if failed else 0


def _message(err: BaseException) -> str:
    """The one-line text of a per-picture error (user errors as they are, others named)."""
    if isinstance(err, AssetGenError):
        return str(err)
    if isinstance(err, MemoryError) or "out of memory" in str(err).lower():
        return ("out of memory (fix: lower --faces, --texture-size or --normal-map-size, use --preset flash, "
                "or free the GPU)")
    raise err


def _cmd_process(args: argparse.Namespace) -> int:
    from engine.runtime.engine import check_output

    config = _config(args)
    out = check_output(args.output)
    args.planned_outputs = [out]
    _check_preview(args)
    with _engine(config) as engine:
        result = engine.process(args.mesh, out, progress=_progress)
        _report(result, args.timings)
        _preview(args, result)
    return 0


def _check_preview(args: argparse.Namespace) -> None:
    if args.preview is not None:
        from engine.report import check_preview_root

        check_preview_root(args.preview)


def _preview(args: argparse.Namespace, result, several: bool = False) -> None:
    """--preview DIR: previews and report.html of the asset just written (engine/report); one subfolder per
    asset when there are several."""
    if args.preview is None:
        return
    from engine.report import preview_folder, write_preview

    written = write_preview(result, result.output, preview_folder(args.preview, result.output, several))
    print(f"wrote {written.report} (previews and report made in {written.seconds:.1f} s, after the asset)")


def _cmd_info(args: argparse.Namespace) -> int:
    from engine.io.glb_export import read_glb_summary

    summary = read_glb_summary(args.file)
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")


def _cmd_serve(args: argparse.Namespace) -> int:
    from engine.service.config import service_config
    from engine.service.server import serve

    return serve(service_config(args, _config(args)))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True,
                   help="output .glb path (generate with several pictures: an output folder)")
    p.add_argument("--preset", default="default", choices=["default", "flash"],
                   help="the paper's settings: default (MeshGen refine, 1024 px views, x2 super-resolution, "
                   "2048^2 atlas) or flash (coarse shape only, 768 px views, 1024^2 atlas); default: default")
    p.add_argument("--faces", type=int, default=None, help="polygon budget (default 20000)")
    p.add_argument("--texture-size", type=int, default=None, help="base-colour atlas edge (power of two)")
    p.add_argument("--normal-map-size", type=int, default=None, help="normal map edge (power of two)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where the stages run: cpu (reference path, sampling scaled for 2 cores, said in "
                   "the notes) or cuda (GPU kernels at the paper's sampling); default: cpu")
    p.add_argument("--placement", default=None, choices=["on_edge", "bounded_optimal"],
                   help="QEM survivor placement: the paper's on-edge rule or the bounded quadric optimum")
    p.add_argument("--uv", default=None, choices=["charts", "xatlas"],
                   help="UV atlas: projection charts + one bitmap packing (default) or xatlas")
    p.add_argument("--hidden-faces", default=None, choices=["flood_fill", "escape_rays"],
                   help="faces the visibility views miss: the paper's normal-gated flood fill (default) or "
                   "escape rays (fewer hidden faces kept, slower on meshes with concavities or interiors); "
                   "either way an escape check keeps every face it can prove visible from outside")
    p.add_argument("--timings", action="store_true",
                   help="print a per-stage timing table with the critical path (wall) beside the sum")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="JIT caches (numba, Triton, Inductor); default $XDG_CACHE_HOME/assetgen")
    p.add_argument("--preview", default=None, metavar="DIR",
                   help="after the asset is written, also write turntable renders, UV layout, wireframe and "
                   "report.html (latency chart, asset contract, 3D viewer) into DIR; one subfolder per asset "
                   "when there are several")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assetgen", description=__doc__.splitlines()[0].replace("``", ""))
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="picture -> game-ready GLB")
    gen.add_argument("images", nargs="*", metavar="IMAGE",
                     help="PNG/JPEG/WebP pictures of one object each (RGBA cut-outs work best), or "
                     "folders of them; several pictures share one resident engine and need -o FOLDER")
    gen.add_argument("--example", action="store_true",
                     help=f"also run on the example picture shipped in the package ({EXAMPLE_PICTURE}, "
                     "MIT, from microsoft/TRELLIS): a first run needs no input of your own")
    gen.add_argument("--seed", type=int, default=None, help="sampler seed (weight-free path: deterministic)")
    gen.add_argument("--precision", default=None, choices=["auto", "bf16", "fp8", "int8"],
                     help="diffusion transformers' linear layers: auto (default) uses the quantisation "
                     "recipe measured for these weights and this GPU when one exists (quant/recipes), "
                     "else bf16")
    gen.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                     help="compile each diffusion transformer block with torch.compile (Inductor fuses "
                     "the norms, modulation and FP8 activation quantisation around the GEMMs); the first "
                     "start of a machine compiles for minutes, later starts read the cache (--cache-dir)")
    gen.add_argument("--fused-kernels", action=argparse.BooleanOptionalAction, default=None,
                     help="on CUDA, run each transformer block's LayerNorm + modulation and SwiGLU gating as "
                     "one Triton pass that also quantises the next FP8/INT8 GEMM's input (default: on)")
    gen.add_argument(
        "--segmenter",
        default=None,
        help="object mask source: alpha, grabcut, or a path to an ONNX matting model (default: alpha when "
        "the picture has an informative alpha channel, else grabcut)",
    )
    gen.add_argument("--shape-model", default=None, metavar="PATH",
                     help="Hunyuan3D-2/-2mini snapshot (repo root or a subfolder with config.yaml and "
                     "model.fp16.safetensors): the shape comes from that network, not the weight-free prior")
    gen.add_argument("--weights", default=None, metavar="DIR",
                     help="AssetGen engine-format checkpoints (dinov2, meshgen_coarse, shape_vae; optional "
                     "meshgen_refine + shape_vae_refine; texturegen + image_vae, optional t5_xxl, clip_l, "
                     "super_resolution)")
    gen.add_argument("--random-networks", default=None, choices=["tiny", "paper"],
                     help="build every network in memory with random weights at this size (latency and "
                     "plumbing checks: the asset's shape and colours are meaningless)")
    gen.add_argument("--max-in-flight", type=int, default=None,
                     help="pictures admitted at once when pipelining several (default 2)")
    _common(gen)
    gen.set_defaults(run=_cmd_generate)
    proc = sub.add_parser("process", help="mesh file (GLB/glTF/OBJ/PLY/OFF) -> game-ready GLB")
    proc.add_argument("mesh", help="the input mesh (GLB/glTF/OBJ/PLY/OFF); every part is kept unless "
                      "--remove-floaters is given")
    proc.add_argument("--remove-floaters", type=float, default=None, metavar="FRACTION",
                      help="remove parts whose surface area is under FRACTION of the whole (e.g. 0.01); "
                      "default: keep every part (an artist's eyes, buttons and wheels are the asset)")
    _common(proc)
    proc.set_defaults(run=_cmd_process)
    info = sub.add_parser("info", help="print the asset contract of a GLB")
    info.add_argument("file", help="a .glb file")
    info.set_defaults(run=_cmd_info)
    serve = sub.add_parser("serve", help="HTTP job service: POST a picture, GET its GLB (engine/service)")
    add_serve_arguments(serve)
    serve.set_defaults(run=_cmd_serve)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: no further stage starts, an output write in progress finishes."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def _is_interrupt(err: BaseException) -> bool:
    """Ctrl-C / SIGTERM, also when it surfaced inside a compiled kernel as SystemError
    ("... returned a result with an exception set")."""
    while err is not None:
        if isinstance(err, KeyboardInterrupt):
            return True
        if not isinstance(err, SystemError):
            return False
        err = err.__cause__ or err.__context__
    return False


def _interrupted(args: argparse.Namespace, err: BaseException, started: float) -> int:
    """Say what the interrupt left: each planned output is complete (written since the start) or absent."""
    name = "SIGTERM" if isinstance(err, _Terminated) else "interrupt (Ctrl-C)"
    planned = getattr(args, "planned_outputs", [])
    written = [p for p in planned if p.is_file() and p.stat().st_mtime >= started]
    if written:
        shown = ", ".join(str(p) for p in written[:5]) + (" ..." if len(written) > 5 else "")
        print(f"stopped by {name}: {len(written)} of {len(planned)} output(s) written completely ({shown}); "
              "no partial file left", file=sys.stderr)
    else:
        print(f"stopped by {name}: no output written, no partial file left", file=sys.stderr)
    return 143 if isinstance(err, _Terminated) else 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time() - 1.0                       # mtime granularity: a file written now counts
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        return args.run(args) or 0
    except AssetGenError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        print(
            "error: out of memory (fix: lower --faces, --texture-size or --normal-map-size, or use "
            "--preset flash)",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        return _interrupted(args, err, started)
    except BrokenPipeError:                           # e.g. ``assetgen info x.glb | head -1``
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except SystemError as err:
        if not _is_interrupt(err):
            raise
        return _interrupted(args, err, started)
    except RuntimeError as err:
        if "out of memory" not in str(err).lower():  # torch.cuda.OutOfMemoryError and allocator failures
            raise
        device = getattr(args, "device", "cpu")
        print(f"error: out of memory on {device} (fix: lower --faces, --texture-size or --normal-map-size, "
              "use --preset flash, or free the GPU)", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
