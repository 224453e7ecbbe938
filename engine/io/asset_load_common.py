"""Pieces shared by the mesh parsers of ``engine.io.asset_load``: the per-primitive ``_Part``, the growing
material table, base-colour texture decoding and fan triangulation (numpy only, no parser imports)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import MeshError


@dataclass
class _Part:
    """One piece of geometry with one material: positions [n, 3], faces [m, 3] local, optional attributes."""

    positions: np.ndarray
    faces: np.ndarray
    material: int | np.ndarray      # one index, or int32 [m] per face
    normals: np.ndarray | None = None
    uvs: np.ndarray | None = None
    colors: np.ndarray | None = None


class _Materials:
    """Growing material table; textures are deduplicated by a source key so sharing can be detected."""

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.texture_keys: list[object] = []

    def add(self, name: str, texture: np.ndarray | None, factor, texture_key: object = None) -> int:
        self.entries.append({"name": name, "texture": texture,
                             "factor": np.asarray(factor, dtype=np.float32).reshape(4)})
        self.texture_keys.append(texture_key if texture is not None else None)
        return len(self.entries) - 1


def _decode_texture(data: bytes, what: str) -> np.ndarray:
    """RGB uint8 [H, W, 3] from encoded PNG/JPEG/WebP bytes (16-bit and palette images handled)."""
    from engine.errors import InputImageError
    from engine.io.image_input import decode_image_bytes

    try:
        return np.ascontiguousarray(decode_image_bytes(data, what)[..., :3])
    except InputImageError as e:
        raise MeshError(f"texture {e.problem}", "re-export the mesh with valid texture images") from None


def _fan(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fan triangulation of polygons stored back to back: (corner ids [T, 3], polygon id [T])."""
    starts = np.cumsum(sizes) - sizes
    ntri = np.maximum(sizes - 2, 0)
    poly = np.repeat(np.arange(sizes.size), ntri)
    k = np.arange(poly.size) - np.repeat(np.cumsum(ntri) - ntri, ntri) + 1
    first = starts[poly]
    return np.stack([first, first + k, first + k + 1], axis=1), poly
