"""Texture stages (paper 7): the base-colour atlas from the reference picture (weight-free), from
TextureGen's views, or from an input mesh's own materials.

Fusion is split in two so the scheduler can overlap it with other work (paper 8.2): ``*_plan`` needs only
the unwrapped mesh (and, for the reference projection, the picture's mask) and runs on the ``gpu-aux``
lane while the normal bake or TextureGen's diffusion runs; ``fuse`` takes the colours.
"""

from __future__ import annotations

import numpy as np

from engine.config import TextureConfig
from engine.errors import InputImageError
from engine.geometry.mesh import TriMesh
from engine.runtime.backends import Backends
from profiling.stage_timer import substep

REFERENCE_MIN_INCIDENCE = 0.1  # reference projection: only texels facing the front camera take its colour


def _reference_views(prepared, mirror: bool):
    """(cameras, images uint8 [K, S, S, 3], masks bool [K, S, S]) of the weight-free path: the picture as
    the rig's front view; with ``mirror`` also its left-right flip as the back view. The silhouette prior
    is the mirror image of its front (``|z| <= h``): the back camera (azimuth 180, image right = world -X)
    sees the point (x, y, -z) at the flipped pixel of (x, y, z), so the flipped picture gives the back the
    colours of the front it mirrors, and the blend weights (incidence) cross-fade the two across the
    silhouette seam."""
    from engine.texture.views import camera_rig

    rgb, mask = np.ascontiguousarray(prepared.rgba[..., :3]), np.asarray(prepared.mask, bool)
    if rgb.ndim != 3 or rgb.shape[0] != rgb.shape[1]:
        raise InputImageError(f"reference image must be square [S, S, 3], got {rgb.shape}",
                              "pass the square crop from engine.io.image_input")
    if not mask.any():
        raise InputImageError("reference mask is empty", "give an image with a visible foreground object")
    rig = camera_rig(radius=1.0)
    if not mirror:
        return [rig[0]], rgb[None], mask[None]
    back = next(c for c in rig if c.name == "rear")
    return ([rig[0], back], np.stack([rgb, rgb[:, ::-1]]), np.stack([mask, mask[:, ::-1]]))


def reference_plan(unwrapped: TriMesh, prepared, *, texture: TextureConfig, backends: Backends,
                   mirror: bool) -> dict:
    """Fusion plan of the weight-free path (``_reference_views``). ``mirror``: the shape is the silhouette
    prior, so its back is the mirror of its front."""
    cams, images, masks = _reference_views(prepared, mirror)
    plan = backends.fusion_plan(unwrapped, cams, texture.atlas_size, images.shape[1], masks,
                                REFERENCE_MIN_INCIDENCE, texture.inpaint_neighbours, texture.inpaint_fill)
    views = "front view and its mirror as the back" if mirror else "front view"
    return {"fusion_plan": plan, "_note": f"{views} at {images.shape[1]} px"}


def reference_fuse(fusion_plan, prepared, *, texture: TextureConfig, backends: Backends,
                   mirror: bool) -> dict:
    _, images, _ = _reference_views(prepared, mirror)
    atlas, stats = backends.fuse(fusion_plan, images)
    seen = "the picture and its mirror" if mirror else "the front"
    note = (f"{texture.atlas_size}^2, {stats['known_texels']} of {stats['valid_texels']} texels seen from "
            f"{seen}, rest inpainted in 3D ({stats.get('inpaint_unfilled', 0)} unfilled")
    if "harmonic_texels" in stats:
        note += (f"; {stats['harmonic_texels']} harmonic, {stats['harmonic_iterations']} CG iterations, "
                 f"{stats['seconds_harmonic']:.2f} s")
    note += ")"
    if "fill_gradient" in stats:
        note += (f"; filled region: mean step {stats['fill_gradient']:.2f}/255, RMS {stats['fill_rms']:.2f}, "
                 f"{100 * stats['fill_jumps']:.2f} % steps > 10")
    return {"base_color": atlas, "_note": note}


def generated_plan(unwrapped: TriMesh, *, texture: TextureConfig, upscale: int, backends: Backends) -> dict:
    """Fusion plan for TextureGen's views (mesh + rig only, no normal map: coverage and texel footprints
    are geometry): the mesh scaled into the rig sphere, its coverage rendered at the diffusion resolution
    and repeated ``upscale`` times per axis (the views' final resolution after super-resolution, as the
    views themselves are upscaled)."""
    from engine.texture.view_harmonisation import HarmoniseConfig
    from engine.texture.views import camera_rig, rig_mesh

    cams = camera_rig()
    rig = rig_mesh(unwrapped)                                      # the frame TextureGen's views use
    with substep("coverage renders"):
        masks = backends.coverage(rig, cams, texture.view_resolution)                 # bool [K, R, R]
    if upscale > 1:
        masks = np.repeat(np.repeat(masks, upscale, axis=1), upscale, axis=2)
    res = texture.view_resolution * upscale
    with substep("fusion plan"):
        plan = backends.fusion_plan(rig, cams, texture.atlas_size, res, masks, 0.05,
                                    texture.inpaint_neighbours, texture.inpaint_fill,
                                    HarmoniseConfig() if texture.harmonise_views else None)
    return {"fusion_plan": plan, "_note": f"{len(cams)} views at {res} px"}


def generated_conditions(visible: TriMesh, prepared, *, texture: TextureConfig, networks, device: str
                         ) -> dict:
    """The reference and position-map latents of TextureGen's conditions: they need the mesh's geometry
    only, so they are encoded while the UVs are made (the GPU is otherwise idle then)."""
    from engine.stages.texture_networks import encode_conditions

    early = encode_conditions(networks, visible, prepared.rgba, texture, device)
    return {"conditions": early, "_note": f"reference + {early.pos_lat.shape[0]} position maps encoded"}


def generated_views(unwrapped: TriMesh, normal_map, prepared, conditions, *, texture: TextureConfig,
                    networks, device: str, seed: int) -> dict:
    """TextureGen's 10 views (engine/stages/texture_networks.py); the condition normals carry the baked
    normal map (paper 7.2); ``conditions`` from ``generated_conditions``. The views stay a uint8 tensor
    on the networks' device: ``backends.fuse`` reads them there."""
    from engine.stages.texture_networks import texturegen_views

    views, _, _, note = texturegen_views(networks, unwrapped.copy(normal_map=normal_map), prepared.rgba,
                                         texture, device, seed, early=conditions, to_host=False)
    return {"views": views, "texture_source": note, "_note": note}


def generated_fuse(fusion_plan, views, *, backends: Backends) -> dict:
    atlas, stats = backends.fuse(fusion_plan, views)
    return {"base_color": atlas, "_note": f"fused, {stats.get('inpaint_unfilled', 0)} unfilled texels"}


def transfer(unwrapped: TriMesh, source: TriMesh, *, texture: TextureConfig) -> dict:
    from engine.texture.transfer import transfer_texture

    atlas = transfer_texture(source, unwrapped, texture.atlas_size)
    return {"base_color": atlas, "_note": f"{texture.atlas_size}^2 from the input's materials"}
