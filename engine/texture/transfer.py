"""Base-colour transfer from a textured source mesh onto a re-unwrapped target mesh.

For every valid texel of the target atlas (``texel_geometry``: the 3D point under the texel) the closest
point on the source surface is found with the source's BVH (``engine.geometry.bvh``, exact point-triangle
distance), giving a source face f and barycentrics b. The source UV uv = sum_i b_i uv[faces[f, i]] is
looked up in the texture of f's material:
  texture material:    c = encode(decode(bilinear_repeat(texture, uv)) * factor.rgb)
  untextured material: c = encode(factor.rgb)
where decode/encode are the sRGB transfer functions (glTF multiplies the linear texture value by
baseColorFactor) and bilinear_repeat uses REPEAT wrap addressing (UVs outside [0, 1] tile). A source
without materials but with ``base_color`` uses it with factor 1; one with only vertex colours (linear)
uses their interpolation. The gutter is then dilated so mip levels do not bleed background.

Materials follow ``engine.io.asset_load``: ``meta["materials"]`` = list of {"name", "texture": uint8
[H, W, 3] sRGB | None, "factor": float32 [4] linear RGBA}, ``meta["face_material"]`` int32 [F].
Alpha is ignored (the atlas is RGB).
"""

from __future__ import annotations

import numpy as np

from engine.errors import MeshError
from engine.geometry.mesh import TriMesh, validate_mesh
from engine.texture.backproject import texel_geometry
from engine.texture.inpaint import dilate_gutter
from engine.texture.render_conditions import sample_bilinear_repeat


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear, float32 (IEC 61966-2-1)."""
    c = np.asarray(c, np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear values -> sRGB-encoded in [0, 1], float32 (inputs clipped to [0, 1])."""
    c = np.clip(np.asarray(c, np.float32), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055).astype(np.float32)


def _materials(source: TriMesh) -> tuple[list[dict], np.ndarray] | None:
    """(materials, face_material int32 [F]) of the source, or None when it only has vertex colours."""
    mats, fm = source.meta.get("materials"), source.meta.get("face_material")
    if mats and fm is not None and len(fm) == source.num_faces:
        return list(mats), np.asarray(fm, np.int32)
    if source.base_color is not None:
        entry = {"name": "base_color", "texture": source.base_color, "factor": np.ones(4, np.float32)}
        return [entry], np.zeros(source.num_faces, np.int32)
    return None


def surface_colours(source: TriMesh, face_id: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """sRGB colours float32 [N, 3] in [0, 1] of source surface points (face_id int32 [N], bary [N, 3])."""
    tri = source.faces[face_id]                                            # [N, 3]
    mats = _materials(source)
    if mats is None:
        if source.colors is None:
            raise MeshError("source mesh has no texture, materials or vertex colours",
                            "load the source with engine.io.asset_load or give it a base_color")
        lin = np.einsum("nk,nkc->nc", bary, source.colors[tri])
        return linear_to_srgb(lin)
    materials, face_material = mats
    out = np.empty((face_id.shape[0], 3), np.float32)
    fm = face_material[face_id]
    uv = None
    for m in np.unique(fm):
        sel = fm == m
        mat = materials[int(m)]
        factor = np.asarray(mat.get("factor", (1.0, 1.0, 1.0, 1.0)), np.float32).reshape(-1)[:3]
        tex = mat.get("texture")
        if tex is None:
            out[sel] = linear_to_srgb(factor)
            continue
        if source.uvs is None:
            raise MeshError(f"source material '{mat.get('name')}' is textured but the mesh has no UVs",
                            "load the source with its texture coordinates")
        if uv is None:
            uv = np.einsum("nk,nkc->nc", bary, source.uvs[tri])            # [N, 2]
        rgb = sample_bilinear_repeat(np.asarray(tex)[..., :3], uv[sel]) / 255.0
        out[sel] = linear_to_srgb(srgb_to_linear(rgb) * factor)
    return out


def transfer_texture(source: TriMesh, target: TriMesh, atlas_size: int, gutter: int | None = 16
                     ) -> np.ndarray:
    """Bake the source's base colour into the target's UV atlas.

    source:     TriMesh with materials (see module docstring), or ``base_color`` + ``uvs``, or colours.
    target:     TriMesh with ``uvs`` [V, 2] (glTF), in the same space as the source.
    atlas_size: edge of the square output atlas.
    gutter:     texels of gutter dilation around charts (None = fill the whole background).
    Returns uint8 [atlas_size, atlas_size, 3] sRGB atlas (0 beyond the dilated gutter).
    """
    from engine.geometry.bvh import build_bvh

    validate_mesh(source, "source mesh")
    texels = texel_geometry(target, atlas_size)
    atlas = np.zeros((atlas_size, atlas_size, 3), np.float32)
    if texels.valid.any():
        hits = build_bvh(source.vertices, source.faces).closest_point(texels.position[texels.valid])
        if (hits.face_id < 0).any():
            raise MeshError("closest-point query found no source face", "check the source mesh")
        atlas[texels.valid] = surface_colours(source, hits.face_id, hits.bary)
    atlas = dilate_gutter(atlas, texels.valid, gutter)
    return np.clip(np.rint(atlas * 255.0), 0, 255).astype(np.uint8)
