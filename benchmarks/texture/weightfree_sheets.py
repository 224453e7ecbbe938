"""Turntable sheets of the weight-free texture, before and after the mirrored back (issue 14 item 2).

For every picture in ``../shared/images``: ``generate`` on the CPU reference path twice in one resident
engine per setting (``TextureConfig.mirror_back`` False = before: the picture projected on the front only,
the rest inpainted in 3D; True = after: its mirror on the back of the silhouette prior, cross-faded across
the silhouette), then 8 lit turntable frames of each asset by the report's rasteriser
(``engine/report/render.py``), before above after, one JPEG per picture, and a markdown index with the
texel coverage each setting reached. Usage:

    .venv/bin/python -m benchmarks.texture.weightfree_sheets --out benchmarks/results/weightfree_texture
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
IMAGES = Path(os.environ.get("ASSETGEN_SHARED", REPO.parent / "shared")) / "images"


def _frames(glb: Path, tile: int) -> np.ndarray:
    """8 lit turntable frames of the asset side by side: uint8 [tile, 8 tile, 3]."""
    from engine.io.asset_load import load_mesh
    from engine.report.config import PreviewConfig
    from engine.report.render import prepare_surface, render_lit, turntable_cameras

    config = PreviewConfig(frame_size=tile, sheet_tile=tile)
    surface = prepare_surface(load_mesh(glb))
    cams = turntable_cameras(config.frames, config.elevation_deg)
    return np.concatenate([render_lit(surface, cam, tile, config) for cam in cams], axis=1)


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from engine.config import PipelineConfig
    from engine.runtime.engine import Engine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--faces", type=int, default=8000)
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--tile", type=int, default=160)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pictures = sorted(IMAGES.glob("*.png"))
    if not pictures:
        raise SystemExit(f"no pictures in {IMAGES}: set ASSETGEN_SHARED to the folder holding images/")
    base = PipelineConfig.from_name("flash").with_overrides(
        faces=args.faces, texture_size=args.texture_size, normal_map_size=512).for_device()
    rows: dict[str, dict] = {p.stem: {} for p in pictures}
    with tempfile.TemporaryDirectory() as tmp:
        for label, mirror in (("before", False), ("after", True)):
            config = replace(base, texture=replace(base.texture, mirror_back=mirror))
            with Engine(config) as engine:
                for picture in pictures:
                    t0 = time.perf_counter()
                    glb = Path(tmp) / f"{picture.stem}_{label}.glb"
                    result = engine.generate(picture, glb)
                    fuse = next(t for t in result.timer.timings if t.name == "texture fuse")
                    rows[picture.stem][label] = (_frames(glb, args.tile), fuse.note, time.perf_counter() - t0)
    lines = ["# Weight-free texture: before / after the mirrored back", "",
             f"CPU reference path, flash preset, {args.faces} faces, {args.texture_size}^2 atlas; "
             "each sheet: "
             "8 lit turntable frames (azimuth 0, 45, ..., 315 deg, elevation 20 deg; our rasteriser), "
             "before (front projection + 3D inpainting) above after (the picture's mirror on the back).", "",
             "| picture | before: texture fuse | after: texture fuse | sheet |", "|---|---|---|---|"]
    for name, r in rows.items():
        sheet = np.concatenate([r["before"][0], r["after"][0]], axis=0)
        Image.fromarray(sheet).save(args.out / f"{name}.jpg", quality=88)
        lines.append(f"| {name} | {r['before'][1]} | {r['after'][1]} | [{name}.jpg]({name}.jpg) |")
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
