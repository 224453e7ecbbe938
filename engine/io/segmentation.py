"""Object masks for input pictures: trust an informative alpha, else GrabCut or a user-supplied ONNX model.

All functions take sRGB uint8 pictures in HWC layout and return bool [H, W] masks (True = object) at the
input's resolution. The paper's service uses a learned segmenter (0.65 s, Table 7); this module gives a
dependency-free classical fallback (GrabCut) and a contract for plugging in any matting/segmentation ONNX
model.

ONNX model contract (``segment_onnx``):
  input 0:  float32 NCHW [1, 3, H, W], RGB in [0, 1] (no mean/std normalisation; bake it into the model if it
            needs one). H, W are the model's static input size, or 1024 x 1024 when they are dynamic.
  output 0: [1, C, H', W'] (or [1, H', W'] / [H', W']) foreground probability or alpha in [0, 1]; channel 0
            is used, resized back to the picture bilinearly and thresholded at 0.5.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from engine.errors import ConfigError, InputImageError, MissingDependencyError

GRABCUT_MAX_SIDE = 512      # GrabCut runs on a downscaled copy (its cost grows with pixels x iterations)
GRABCUT_ITERATIONS = 5
ONNX_DYNAMIC_SIZE = 1024


def alpha_is_informative(rgba: np.ndarray) -> bool:
    """True when the alpha channel of uint8 [H, W, 4] is a usable cut-out: not constant, and the object
    (alpha >= 128) covers between 0.1% and 99% of the frame."""
    rgba = _check_image(rgba, 4, "RGBA picture")
    alpha = rgba[..., 3]
    if alpha.min() == alpha.max():
        return False
    coverage = float((alpha >= 128).mean())
    return 0.001 <= coverage <= 0.99


def segment_grabcut(rgb: np.ndarray) -> np.ndarray:
    """Foreground mask bool [H, W] of an object on a background, by OpenCV GrabCut.

    Seeds: a border strip (3% of the shorter side, at least 2 px) is definite background; the central
    half of the frame and pixels whose colour differs strongly from the border's median colour are probable
    foreground; everything else probable background. GrabCut runs ``GRABCUT_ITERATIONS`` iterations on a
    copy whose longer side is at most ``GRABCUT_MAX_SIDE``; the result is upsampled, reduced to its largest
    connected component, and its holes are filled. Assumes the object does not touch the picture border.
    """
    import cv2

    rgb = _check_image(rgb, 3, "RGB picture")
    h, w = rgb.shape[:2]
    scale = min(1.0, GRABCUT_MAX_SIDE / max(h, w))
    small = rgb.copy()
    if scale < 1.0:
        small = cv2.resize(rgb, (max(8, round(w * scale)), max(8, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    seeds = np.full((sh, sw), cv2.GC_PR_BGD, np.uint8)
    border = max(2, round(0.03 * min(sh, sw)))
    strip = np.zeros((sh, sw), bool)
    strip[:border], strip[-border:], strip[:, :border], strip[:, -border:] = True, True, True, True
    bg_colour = np.median(small[strip].astype(np.float32), axis=0)
    distance = np.linalg.norm(small.astype(np.float32) - bg_colour, axis=2)
    seeds[distance > 40.0] = cv2.GC_PR_FGD
    seeds[sh // 4: sh - sh // 4, sw // 4: sw - sw // 4] = cv2.GC_PR_FGD
    seeds[strip] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), seeds, None, bgd, fgd, GRABCUT_ITERATIONS,
                cv2.GC_INIT_WITH_MASK)
    fg = ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)).astype(np.float32)
    if scale < 1.0:
        fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
    return fill_holes(largest_component(fg >= 0.5))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: the largest 8-connected component of ``mask`` (all False if it is empty)."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask, dtype=bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: ``mask`` with every background region not 4-connected to the border filled."""
    import cv2

    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1, flags=4)
    return mask | (flood[1:-1, 1:-1] == 0)


def segment_onnx(rgb: np.ndarray, model_path: str | Path) -> np.ndarray:
    """Foreground mask bool [H, W] from a user ONNX segmentation/matting model (contract: module doc)."""
    import cv2

    rgb = _check_image(rgb, 3, "RGB picture")
    model = Path(model_path).resolve()
    if not model.is_file():
        raise ConfigError(f"ONNX segmentation model {model_path} not found", "check the --segmenter path")
    session = _onnx_session(str(model), model.stat().st_mtime_ns)
    spec = session.get_inputs()[0]
    if len(spec.shape) != 4:
        raise ConfigError(f"ONNX model {model_path} input has shape {spec.shape}, expected NCHW",
                          "export the model with a [1, 3, H, W] input")
    mh, mw = (d if isinstance(d, int) and d > 0 else ONNX_DYNAMIC_SIZE for d in spec.shape[2:])
    h, w = rgb.shape[:2]
    x = cv2.resize(rgb, (mw, mh), interpolation=cv2.INTER_AREA if mw * mh < w * h else cv2.INTER_LINEAR)
    x = (x.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]          # [1, 3, mh, mw]
    try:
        out = np.asarray(session.run(None, {spec.name: x})[0], dtype=np.float32)
    except _ort_errors() as e:
        raise ConfigError(f"ONNX model {model_path} failed to run ({e})",
                          "check that it follows the segmenter contract (NCHW float32 RGB input)") from None
    prob = out[0, 0] if out.ndim == 4 else out[0] if out.ndim == 3 else out
    if prob.ndim != 2:
        raise ConfigError(f"ONNX model {model_path} output has shape {out.shape}",
                          "return [1, C, H, W] probabilities or alpha")
    prob = cv2.resize(np.ascontiguousarray(prob), (w, h), interpolation=cv2.INTER_LINEAR)
    return prob > 0.5


@lru_cache(maxsize=2)
def _onnx_session(model_path: str, mtime_ns: int):
    """A cached CPU onnxruntime session for ``model_path`` (the mtime in the key drops stale sessions)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError("onnxruntime", "onnx") from None
    try:
        return ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    except _ort_errors() as e:
        raise ConfigError(f"ONNX model {model_path} cannot be loaded ({str(e).splitlines()[0][:200]})",
                          "give a valid .onnx file") from None


def _ort_errors() -> tuple[type[Exception], ...]:
    """onnxruntime's exception classes (they derive from Exception directly), plus RuntimeError/ValueError."""
    import onnxruntime as ort

    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
             "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    found = tuple(c for c in (getattr(state, n, None) for n in names) if isinstance(c, type))
    return found + (RuntimeError, ValueError)


def _check_image(image: np.ndarray, channels: int, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != channels or min(image.shape[:2]) < 2:
        raise InputImageError(f"{what} has shape {image.shape} dtype {image.dtype}",
                              f"give uint8 [H, W, {channels}] with H, W >= 2")
    return image
