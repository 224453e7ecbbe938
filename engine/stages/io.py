"""Input and output stages: the picture, a mesh file, the GLB (host work: the scheduler's ``cpu`` lane).

The GLB is built in three stages so that only the base colour's PNG and the file write wait for the last
texture result: ``pack_geometry`` runs once the mesh is unwrapped and ``encode_normal_map`` once the normal
map is baked, both on the ``cpu`` lane beside the GPU stages; ``export`` assembles the file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.geometry.mesh import TriMesh, validate_mesh

if TYPE_CHECKING:
    from engine.io.glb_export import GeometryBuffers


def load_image(image_path: Path, segmenter: str | None) -> dict:
    from engine.io.image_input import prepare_image

    prepared = prepare_image(image_path, segmenter=segmenter)
    return {"prepared": prepared, "_note": f"mask from {prepared.mask_source}", "_warnings": prepared.notes}


def load_mesh(mesh_path: Path) -> dict:
    from engine.io.asset_load import load_mesh as load

    source = load(mesh_path)
    validate_mesh(source, f"mesh {mesh_path}")
    return {"source": source, "_note": f"{source.num_faces} faces",
            "_warnings": [f"input mesh: {note}" for note in source.meta.get("notes", [])]}


def encode_normal_map(normal_map: np.ndarray) -> dict:
    """The normal map's PNG, encoded as soon as it is baked (beside the base-colour texturing)."""
    from engine.io.glb_export import encode_texture

    png = encode_texture(normal_map, "normal_map")
    return {"normal_png": png, "_note": _png_size(png)}


def pack_geometry(unwrapped: TriMesh) -> dict:
    """The GLB's vertex and index buffers, laid out as soon as the mesh is unwrapped."""
    from engine.io.glb_export import pack_geometry as pack

    geometry = pack(unwrapped)
    return {"geometry_buffers": geometry,
            "_note": f"{geometry.num_vertices} vertices, {len(geometry.blob) / 1e6:.2f} MB"}


def export(unwrapped: TriMesh, normal_map: np.ndarray, base_color: np.ndarray,
           geometry_buffers: GeometryBuffers, normal_png: bytes, output: Path) -> dict:
    """The base colour's PNG, then the GLB around the early parts, written to a temporary name in the output
    folder and renamed when complete."""
    from engine.io.glb_export import assemble_glb, encode_texture, write_glb_bytes

    base_png = encode_texture(base_color, "base_color")
    write_glb_bytes(assemble_glb(geometry_buffers, base_png, normal_png), output)
    asset = unwrapped.copy(normal_map=normal_map, base_color=base_color)
    return {"asset": asset,
            "_note": f"{output.stat().st_size / 1e6:.2f} MB (base colour {_png_size(base_png)})"}


def _png_size(png: bytes) -> str:
    return f"{len(png) / 1e6:.2f} MB PNG"
