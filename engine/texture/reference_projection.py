"""Weight-free texture: project the reference image onto the mesh from the front, complete the rest in 3D.

The stand-in for TextureGen when no model weights are available (issue item 9). The reference image is
taken as the FRONT view of the rig: ``camera_rig()[0]`` with half_extent 1, i.e. the image spans world
x in [-1, 1] (column 0 = -1) and y in [-1, 1] (row 0 = +1), looking along -Z. The mesh must be in that
frame (the frame in which the shape stage reconstructed it from this image). Every atlas texel is
projected into the image; it takes the image colour when it is visible from the front (depth test
against a z-buffer of the mesh rendered at the image resolution), its incidence exceeds
``min_incidence``, and its bilinear taps lie inside the foreground mask and off depth discontinuities.
Every other valid texel is completed by ``inpaint_3d`` and the gutter is dilated.
"""

from __future__ import annotations

import numpy as np

from engine.errors import InputImageError
from engine.geometry.mesh import TriMesh
from engine.texture.backproject import fuse_views
from engine.texture.views import OrthoCamera, camera_rig


def texture_from_reference(mesh: TriMesh, image_rgb: np.ndarray, mask: np.ndarray, atlas_size: int,
                           front_camera: OrthoCamera | None = None, min_incidence: float = 0.1,
                           neighbours: int = 8, device: str = "cpu") -> tuple[np.ndarray, dict]:
    """Base-colour atlas from one front reference image.

    mesh:         TriMesh with uvs [V, 2] (glTF), in the reference frame described above.
    image_rgb:    uint8 [S, S, 3] sRGB reference picture (square).
    mask:         bool [S, S] foreground (e.g. alpha > 127).
    atlas_size:   atlas edge H = W.
    front_camera: the camera the image was taken with; default ``camera_rig(radius=1.0)[0]``.
    device:       "cpu" -> the CPU reference ``fuse_views``; "cuda" -> the GPU fusion
                  (``engine.texture.fusion_gpu.fuse_views_device``: same contract).
    Returns (atlas uint8 [H, W, 3], stats dict: valid/known texel counts, inpainting rounds,
    ``neutral_fill``, stage seconds).
    """
    img = np.asarray(image_rgb)
    m = np.asarray(mask)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] != img.shape[1] or img.dtype != np.uint8:
        raise InputImageError(f"reference image must be uint8 [S, S, 3], got {img.dtype} {img.shape}",
                              "pass the square RGB crop from engine.io.image_input")
    if m.shape != img.shape[:2]:
        raise InputImageError(f"mask shape {m.shape} does not match image {img.shape[:2]}",
                              "pass the alpha mask of the same picture")
    if not m.any():
        raise InputImageError("reference mask is empty", "give an image with a visible foreground object")
    cam = camera_rig(radius=1.0)[0] if front_camera is None else front_camera
    if device == "cpu":
        atlas, stats = fuse_views(mesh, [cam], img[None], atlas_size, masks=m.astype(bool)[None],
                                  min_incidence=min_incidence, neighbours=neighbours)
    else:
        from engine.texture.fusion_gpu import fuse_views_device

        atlas, stats = fuse_views_device(mesh, [cam], img[None], atlas_size, device=device,
                                         masks=m.astype(bool)[None], min_incidence=min_incidence,
                                         neighbours=neighbours)
    stats["front_camera"] = cam.name
    return atlas, stats
