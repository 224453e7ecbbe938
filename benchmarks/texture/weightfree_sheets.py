"""Turntable sheets of the weight-free texture, before and after the harmonic fill (issue 14 item 2).

For every picture in ``../shared/images``: ``generate`` on the CPU reference path twice, in one resident
engine per setting, both with the picture's mirror on the back of the silhouette prior
(``TextureConfig.mirror_back``): before, ``TextureConfig.inpaint_fill`` = knn (the texels neither view
saw filled by UV rings then k-nearest texels in 3D); after, harmonic (their harmonic fill over the
surface). Then 8 lit turntable frames of each asset by the report's rasteriser
(``engine/report/render.py``), before above after, one JPEG per picture, and a markdown index with the
texture fuse stage's note (coverage, smoothness of the filled region) and seconds. Usage:

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

    from engine.config import InpaintFill, PipelineConfig
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
        for label, fill in (("before", InpaintFill.KNN), ("after", InpaintFill.HARMONIC)):
            config = replace(base, texture=replace(base.texture, mirror_back=True, inpaint_fill=fill))
            with Engine(config) as engine:
                for picture in pictures:
                    t0 = time.perf_counter()
                    glb = Path(tmp) / f"{picture.stem}_{label}.glb"
                    result = engine.generate(picture, glb, overlap=False)   # stage seconds alone
                    fuse = next(t for t in result.timer.timings if t.name == "texture fuse")
                    rows[picture.stem][label] = (_frames(glb, args.tile), fuse.note, fuse.seconds,
                                                 time.perf_counter() - t0)
    lines = ["# Weight-free texture: before / after the harmonic fill of the unseen texels", "",
             f"CPU reference path, flash preset, {args.faces} faces, {args.texture_size}^2 atlas; "
             "each sheet: "
             "8 lit turntable frames (azimuth 0, 45, ..., 315 deg, elevation 20 deg; our rasteriser), "
             "before (k-nearest fill) above after (harmonic fill), both with the picture's mirror on the "
             "back.",
             "", "| picture | before: texture fuse | s | after: texture fuse | s | sheet |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        sheet = np.concatenate([r["before"][0], r["after"][0]], axis=0)
        Image.fromarray(sheet).save(args.out / f"{name}.jpg", quality=88)
        b, a = r["before"], r["after"]
        lines.append(f"| {name} | {b[1]} | {b[2]:.2f} | {a[1]} | {a[2]:.2f} | [{name}.jpg]({name}.jpg) |")
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
