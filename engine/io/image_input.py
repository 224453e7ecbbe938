"""The input picture: decode any common image to 8-bit sRGB RGBA, find the object, crop and condition it.

Decoding (``load_image``): PNG / JPEG / WebP (and anything else Pillow reads), 8- or 16-bit, grey, grey+alpha,
palette (with tRNS transparency), RGB, RGBA, CMYK. 16-bit samples are rounded to 8 bits as
``round(x / 257)`` (Pillow's own 16->8 path truncates, so 16-bit colour PNGs are decoded with OpenCV).
EXIF orientation is applied. An embedded ICC profile is converted to sRGB (Pillow's littleCMS) so the result
is sRGB (limit: not for 16-bit colour PNGs, whose OpenCV path ignores the profile). The pixel count is
checked from the header before any pixel is decoded (no decompression bomb can allocate or hang), and
Pillow's own DecompressionBombWarning is turned into an error.

Preparation (``prepare_image``): the object mask comes from the alpha channel when it is informative,
otherwise from a segmenter (``engine.io.segmentation``). The crop is the mask's bounding square enlarged so
the object's longer side spans ``1 - 2 * margin`` of it, centred on the bounding-box centre (areas outside
the picture are transparent), resized to ``size`` with premultiplied alpha.

Conditioning (DINOv2 convention): the RGBA crop is composited on white, resized to 518 and 1022 pixels
(paper 5.2: coarse and refine stages; multiples of the ViT patch 14), scaled to [0, 1] and normalised with
the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); layout CHW float32.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from engine.errors import ConfigError, InputImageError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
ALPHA_THRESHOLD = 128            # alpha >= this is object
MIN_COVERAGE, MAX_COVERAGE = 0.001, 0.99


@dataclass
class PreparedImage:
    """The conditioning inputs derived from one picture.

    rgba:        uint8 [S, S, 4] sRGB, straight alpha; the object centred, its longer side (1 - 2 margin) S.
    mask:        bool [S, S] object pixels.
    mask_source: "alpha" | "grabcut" | "onnx:<model path>".
    crop_box:    (x0, y0, x1, y1) integer source-pixel box of the square crop (x1, y1 exclusive); it may
                 extend past the picture, where the crop is transparent.
    cond_518:    float32 [3, 518, 518] composited on white, ImageNet-normalised (DINOv2 input, coarse stage);
    cond_1022:   float32 [3, 1022, 1022] same at the refine stage's resolution. Both are computed on first
                 access (host tensors for callers outside the engine: the engine's shape stage builds its
                 DINOv2 input on the device from ``rgba``, so a request no longer pays ~60 ms for them).
    """

    rgba: np.ndarray
    mask: np.ndarray
    mask_source: str
    crop_box: tuple[int, int, int, int]
    notes: tuple[str, ...] = ()  # what was ignored or assumed (e.g. an unusable alpha channel), for the user

    @cached_property
    def cond_518(self) -> np.ndarray:
        return _dino_tensor(_composite_on_white(self.rgba), 518)

    @cached_property
    def cond_1022(self) -> np.ndarray:
        return _dino_tensor(_composite_on_white(self.rgba), 1022)


def load_image(path: str | Path, max_pixels: int = 64_000_000) -> np.ndarray:
    """Decode an image file to uint8 [H, W, 4] sRGB RGBA (straight alpha; opaque where it has none).

    Raises InputImageError (one line: problem and fix) for a missing, empty, truncated, non-image or
    over-large file (more than ``max_pixels`` pixels, checked from the header before decoding). Pillow's
    decompression-bomb guard (Image.MAX_IMAGE_PIXELS, ~89 Mpixel) also applies, its warning raised as an
    error, so ``max_pixels`` above that limit is effectively capped by it.
    """
    path = Path(path)
    if not path.exists():
        raise InputImageError(f"input image {path} not found", "check the path")
    if not path.is_file():
        raise InputImageError(f"input image {path} is not a file", "give a PNG, JPEG or WebP file")
    if path.stat().st_size == 0:
        raise InputImageError(f"input image {path} is empty (0 bytes)", "re-export or re-download it")
    return decode_image_bytes(path.read_bytes(), str(path), max_pixels)


def decode_image_bytes(data: bytes, what: str, max_pixels: int = 64_000_000) -> np.ndarray:
    """Decode encoded image bytes to uint8 [H, W, 4] sRGB RGBA; ``what`` names the source in errors."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise InputImageError(f"{what} is empty (0 bytes)", "re-export or re-download the picture")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width * height > max_pixels:
                raise InputImageError(f"{what} is too large ({width}x{height} = {width * height} pixels, "
                                      f"limit {max_pixels})", "downscale the picture (e.g. to 2048x2048)")
            if width == 0 or height == 0:
                raise InputImageError(f"{what} has zero size", "give a non-empty picture")
            if im.format == "PNG" and data[24:25] == b"\x10" and im.mode in ("RGB", "RGBA"):
                rgba = _decode_png16_color(data, what)
                return _orient(rgba, im.getexif().get(0x0112, 1))
            im.load()
            im = ImageOps.exif_transpose(im)
            return _to_rgba8(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputImageError(f"{what} is too large to decode safely (decompression bomb guard: {e})",
                              "downscale the picture (e.g. to 2048x2048)") from None
    except UnidentifiedImageError:
        raise InputImageError(f"{what} is not a readable image", "give a PNG, JPEG or WebP picture") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputImageError(f"{what} is corrupt or truncated ({e})",
                              "re-export or re-download the picture") from None


def _to_rgba8(im) -> np.ndarray:
    """Pillow image of any mode -> uint8 [H, W, 4], ICC profile converted to sRGB."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit (or 32-bit int) grey
        grey = np.asarray(im).astype(np.float64)
        grey = np.clip(np.round(grey / 257.0), 0, 255).astype(np.uint8)
        return np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    if im.mode == "F":
        grey = np.clip(np.round(np.asarray(im) * 255.0), 0, 255).astype(np.uint8)
        return np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    icc = im.info.get("icc_profile")
    if im.mode in ("P", "PA", "1", "L", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    if icc and im.mode in ("RGB", "RGBA", "CMYK"):
        im = _icc_to_srgb(im, icc)
    rgba = np.asarray(im.convert("RGBA") if im.mode != "RGBA" else im)
    return np.ascontiguousarray(rgba, dtype=np.uint8)


def _icc_to_srgb(im, icc: bytes):
    """Convert an image with an embedded ICC profile to sRGB (RGB or RGBA); alpha is kept unchanged."""
    from PIL import ImageCms

    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        alpha = im.getchannel("A") if im.mode == "RGBA" else None
        base = im.convert("RGB") if im.mode == "RGBA" else im
        out = ImageCms.profileToProfile(base, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return im  # an unreadable profile: keep the pixels as they are (treated as sRGB)
    if alpha is not None:
        out.putalpha(alpha)
    return out


def _decode_png16_color(data: bytes, what: str) -> np.ndarray:
    """16-bit RGB(A) PNG -> uint8 [H, W, 4] with round(x / 257) (OpenCV keeps all 16 bits)."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        raise InputImageError(f"{what} is a corrupt 16-bit PNG", "re-export the picture")
    rgb = arr[..., [2, 1, 0]] if arr.shape[2] == 3 else arr[..., [2, 1, 0, 3]]
    rgb8 = np.round(rgb.astype(np.float64) / 257.0).astype(np.uint8)
    if rgb8.shape[2] == 3:
        rgb8 = np.dstack([rgb8, np.full(rgb8.shape[:2], 255, np.uint8)])
    return np.ascontiguousarray(rgb8)


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation tag (1..8) to an [H, W, C] array (same result as ImageOps.exif_transpose)."""
    ops = {2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
           5: lambda x: x.transpose(1, 0, 2), 6: lambda x: np.rot90(x, -1), 7: lambda x: np.rot90(x, 1)[::-1],
           8: lambda x: np.rot90(x, 1)}
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def prepare_image(path: str | Path, segmenter: str | None = None, margin: float = 0.1,
                  size: int = 1024) -> PreparedImage:
    """Load a picture, find the object, and build the centred crop and the DINOv2 conditioning tensors.

    segmenter: None (alpha when informative, else GrabCut), "alpha", "grabcut" or "onnx:<model.onnx>".
    margin: share of the crop left on each side of the object's longer side, in [0, 0.45].
    size: edge of the square crop ``rgba`` / ``mask`` in pixels.
    """
    from engine.io import segmentation as seg

    if not 0.0 <= margin <= 0.45:
        raise ConfigError(f"crop margin {margin} out of range", "use a margin in [0, 0.45]")
    if not 16 <= size <= 8192:
        raise ConfigError(f"crop size {size} out of range", "use a size in [16, 8192]")
    rgba = load_image(path)
    alpha = rgba[..., 3]
    notes: list[str] = []
    if segmenter is None and alpha.max() == 0:
        raise InputImageError(f"{path} is fully transparent (alpha 0 everywhere): no object to model",
                              "export the picture with its object visible, or without an alpha channel")
    source = segmenter or ("alpha" if seg.alpha_is_informative(rgba) else "grabcut")
    if segmenter is None and source == "grabcut" and alpha.min() < 255:
        covered = float((alpha >= ALPHA_THRESHOLD).mean())
        notes.append(f"the picture's alpha channel was ignored (object covers {covered:.1%}"
                     f" of the frame, outside {MIN_COVERAGE:.1%}-{MAX_COVERAGE:.0%}); the object mask comes "
                     "from GrabCut")
    if source == "alpha":
        if not seg.alpha_is_informative(rgba):
            raise InputImageError(f"{path} has no usable alpha cut-out (alpha constant or covering <0.1% "
                                  f"or >99% of the frame)", "give an RGBA cut-out or use a segmenter")
        mask = rgba[..., 3] >= ALPHA_THRESHOLD
    elif source == "grabcut":
        mask = seg.segment_grabcut(rgba[..., :3])
    elif source.startswith("onnx:"):
        mask = seg.segment_onnx(rgba[..., :3], source[5:])
    else:
        raise ConfigError(f"unknown segmenter '{segmenter}'", "use 'alpha', 'grabcut' or 'onnx:<model.onnx>'")
    _check_mask(mask, path)
    if source != "alpha":  # the segmenter's hard mask becomes the alpha channel
        rgba = np.dstack([rgba[..., :3], np.where(mask, 255, 0).astype(np.uint8)])
    crop, box = _centred_crop(rgba, mask, margin, size)
    return PreparedImage(crop, crop[..., 3] >= ALPHA_THRESHOLD, source, box, tuple(notes))


def _check_mask(mask: np.ndarray, path) -> None:
    coverage = float(mask.mean())
    if coverage == 0.0:
        raise InputImageError(f"object mask is empty for {path}: no object found",
                              "give a picture with one clear object, or an RGBA cut-out")
    if coverage > MAX_COVERAGE:
        raise InputImageError(f"object mask fills the frame ({coverage:.1%}) for {path}",
                              "give a picture with visible background around the object, or an RGBA cut-out")


def _centred_crop(rgba: np.ndarray, mask: np.ndarray, margin: float, size: int):
    """Square crop around the mask's bbox (transparent padding), resized to size x size with premultiplied
    alpha. Returns (uint8 [size, size, 4], (x0, y0, x1, y1))."""
    import cv2

    ys, xs = np.nonzero(mask)
    bx0, bx1, by0, by1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = max(bx1 - bx0, by1 - by0) / (1.0 - 2.0 * margin)
    cx, cy = (bx0 + bx1) / 2.0, (by0 + by1) / 2.0        # bbox centre, pixel-edge coordinates
    # affine map source -> crop in OpenCV's pixel-centre coordinates (edge coordinate - 0.5): the bbox
    # centre lands on the crop centre exactly; outside the picture is transparent
    scale = size / side
    m = np.array([[scale, 0.0, (size / 2.0 - 0.5) - scale * (cx - 0.5)],
                  [0.0, scale, (size / 2.0 - 0.5) - scale * (cy - 0.5)]])
    # premultiplied alpha, one contiguous float32 plane per channel (each resampled on its own: the same
    # values as the interleaved image, without strided passes)
    channels = cv2.split(rgba)                                                       # 4 x uint8 [H, W]
    a = channels[3].astype(np.float32) / 255.0                                       # [H, W]
    planes = [np.multiply(c, a, dtype=np.float32) for c in channels[:3]] + [a * np.float32(255.0)]
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
    if scale < 1.0:  # INTER_AREA is not supported by warpAffine: pre-shrink with resize, then warp
        h, w = rgba.shape[:2]
        shape = (max(1, round(w * scale)), max(1, round(h * scale)))
        planes = [cv2.resize(p, shape, interpolation=interp) for p in planes]
        sx, sy = shape[0] / w, shape[1] / h  # small pixel i <-> source (i + 0.5) / s - 0.5
        m = m @ np.array([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5], [0, 0, 1]])
        interp = cv2.INTER_LINEAR
    crop = _unpremultiply([cv2.warpAffine(p, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                                          borderValue=0) for p in planes])
    x0, y0 = int(np.floor(cx - side / 2.0)), int(np.floor(cy - side / 2.0))
    box = (x0, y0, int(np.ceil(cx + side / 2.0)), int(np.ceil(cy + side / 2.0)))
    return crop, box


def _unpremultiply(planes: list[np.ndarray]) -> np.ndarray:
    """Premultiplied float32 planes (r, g, b, alpha in 0..255; [S, S] each) -> straight-alpha uint8
    [S, S, 4]; colour 0 where alpha rounds to 0."""
    import cv2

    alpha = np.clip(planes[3], 0.0, 255.0)
    denom = np.maximum(alpha / 255.0, 1e-6)
    gone = alpha < 0.5
    channels = []
    for plane in planes[:3]:
        v = np.round(plane / denom)
        np.clip(v, 0, 255, out=v)
        v[gone] = 0
        channels.append(v.astype(np.uint8))
    channels.append(np.round(alpha).astype(np.uint8))
    return cv2.merge(channels)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """float32 [H, W, 3] in [0, 1]: RGB over a white background using straight alpha."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return rgba[..., :3].astype(np.float32) / 255.0 * a + (1.0 - a)


def _dino_tensor(white: np.ndarray, res: int) -> np.ndarray:
    """float32 [3, res, res]: resized, ImageNet-normalised, channels first."""
    import cv2

    interp = cv2.INTER_AREA if res < white.shape[0] else cv2.INTER_CUBIC
    img = np.clip(cv2.resize(white, (res, res), interpolation=interp), 0.0, 1.0)
    return np.ascontiguousarray(((img - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1), dtype=np.float32)
