"""``assetgen``: generate (image -> GLB), process (mesh -> GLB), info (GLB contract).

User errors print one line ``error: <problem> (fix: <fix>)`` and exit with status 2; no output file is
left behind (the GLB writer writes a temporary file and renames it at the end).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.config import Device, PipelineConfig
from engine.errors import AssetGenError, ConfigError

EXIT_USER_ERROR = 2


def _config(args: argparse.Namespace) -> PipelineConfig:
    config = PipelineConfig.from_name(args.preset).with_overrides(
        faces=args.faces,
        texture_size=args.texture_size,
        normal_map_size=args.normal_map_size,
        device=args.device,
        seed=getattr(args, "seed", None),
        placement=args.placement,
        shape_model=getattr(args, "shape_model", None),
        weights=getattr(args, "weights", None),
    )
    if config.runtime.device is Device.CUDA:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was asked for but no CUDA GPU is visible to torch",
                "run with --device cpu, or install a CUDA build of torch on a GPU machine",
            )
    return config.for_device()


def _check_output(path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".glb":
        raise ConfigError(f"output '{out}' does not end in .glb", "name the output file something.glb")
    if not out.parent.exists():
        raise ConfigError(
            f"output folder '{out.parent}' does not exist", "create it first or choose another -o"
        )
    return out


def _progress(index: int, count: int, name: str, seconds: float | None) -> None:
    if seconds is None:
        print(f"[{index}/{count}] {name} ...", file=sys.stderr, flush=True)
    else:
        print(f"[{index}/{count}] {name} done in {seconds:.2f} s", file=sys.stderr, flush=True)


def _report(result, show_timings: bool) -> None:
    for key, value in result.sources.items():
        print(f"{key} source: {value}")
    for note in result.notes:
        print(f"note: {note}")
    mesh = result.mesh
    print(
        f"wrote {result.output} ({mesh.num_faces} faces, {mesh.num_vertices} vertices, base colour "
        f"{mesh.base_color.shape[1]}^2, normal map {mesh.normal_map.shape[1]}^2)"
    )
    if show_timings:
        print(result.timer.table())


def _cmd_generate(args: argparse.Namespace) -> None:
    from engine.pipeline import generate

    config = _config(args)
    out = _check_output(args.output)
    print(
        f"preset {config.preset.value}, device {config.runtime.device.value}, budget {config.geometry.faces} "
        f"faces",
        file=sys.stderr,
    )
    segmenter = args.segmenter
    if segmenter is not None and segmenter not in ("alpha", "grabcut") and not segmenter.startswith("onnx:"):
        segmenter = f"onnx:{segmenter}"  # a model path
    result = generate(args.image, out, config, segmenter=segmenter, progress=_progress)
    _report(result, args.timings)


def _cmd_process(args: argparse.Namespace) -> None:
    from engine.pipeline import process

    config = _config(args)
    out = _check_output(args.output)
    result = process(args.mesh, out, config, progress=_progress)
    _report(result, args.timings)


def _cmd_info(args: argparse.Namespace) -> None:
    from engine.io.glb_export import read_glb_summary

    summary = read_glb_summary(args.file)
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="output .glb path")
    p.add_argument("--preset", default="default", choices=["default", "flash"])
    p.add_argument("--faces", type=int, default=None, help="polygon budget (default 20000)")
    p.add_argument("--texture-size", type=int, default=None, help="base-colour atlas edge (power of two)")
    p.add_argument("--normal-map-size", type=int, default=None, help="normal map edge (power of two)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--placement", default=None, choices=["on_edge", "bounded_optimal"],
                   help="QEM survivor placement: the paper's on-edge rule or the bounded quadric optimum")
    p.add_argument("--timings", action="store_true", help="print a per-stage timing table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assetgen", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="picture -> game-ready GLB")
    gen.add_argument("image", help="PNG/JPEG/WebP picture of one object (RGBA cut-outs work best)")
    gen.add_argument("--seed", type=int, default=None, help="sampler seed (weight-free path: deterministic)")
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
                     help="AssetGen engine-format checkpoints (dinov2, meshgen_coarse, shape_vae)")
    _common(gen)
    gen.set_defaults(run=_cmd_generate)
    proc = sub.add_parser("process", help="mesh file (GLB/glTF/OBJ/PLY/OFF) -> game-ready GLB")
    proc.add_argument("mesh")
    _common(proc)
    proc.set_defaults(run=_cmd_process)
    info = sub.add_parser("info", help="print the asset contract of a GLB")
    info.add_argument("file")
    info.set_defaults(run=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
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
    except RuntimeError as err:
        if "out of memory" not in str(err).lower():  # torch.cuda.OutOfMemoryError and allocator failures
            raise
        device = getattr(args, "device", "cpu")
        print(f"error: out of memory on {device} (fix: lower --faces, --texture-size or --normal-map-size, "
              "use --preset flash, or free the GPU)", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; no output written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
