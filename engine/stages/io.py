"""Input and output stages: the picture, a mesh file, the GLB (host work: the scheduler's ``cpu`` lane)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.geometry.mesh import TriMesh, validate_mesh


def load_image(image_path: Path, segmenter: str | None) -> dict:
    from engine.io.image_input import prepare_image

    prepared = prepare_image(image_path, segmenter=segmenter)
    return {"prepared": prepared, "_note": f"mask from {prepared.mask_source}"}


def load_mesh(mesh_path: Path) -> dict:
    from engine.io.asset_load import load_mesh as load

    source = load(mesh_path)
    validate_mesh(source, f"mesh {mesh_path}")
    return {"source": source, "_note": f"{source.num_faces} faces"}


def export(unwrapped: TriMesh, normal_map: np.ndarray, base_color: np.ndarray, output: Path) -> dict:
    """The GLB, written to a temporary name in the output folder and renamed when complete."""
    from engine.io.glb_export import write_glb

    asset = unwrapped.copy(normal_map=normal_map, base_color=base_color)
    write_glb(asset, output)
    return {"asset": asset, "_note": f"{output.stat().st_size / 1e6:.2f} MB"}
