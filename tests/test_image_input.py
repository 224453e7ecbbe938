"""Image input and segmentation: decoding (bit depths, modes, EXIF, ICC), centred crops, DINOv2 tensors,
GrabCut against the real alpha cut-outs, the ONNX segmenter contract, and every bad-input case."""

from __future__ import annotations

import struct
import sys
import zlib

import numpy as np
import pytest
from conftest import IMAGES

from engine.errors import ConfigError, InputImageError, MissingDependencyError
from engine.io import segmentation
from engine.io.image_input import IMAGENET_MEAN, IMAGENET_STD, load_image, prepare_image
from engine.io.segmentation import alpha_is_informative, segment_grabcut, segment_onnx

REAL = sorted(IMAGES.glob("*.png"))


def _real(name: str):
    path = IMAGES / name
    if not path.is_file():
        pytest.skip(f"shared image {path} not found")
    return path


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _over(rgba: np.ndarray, background: int) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.round(rgba[..., :3] * a + background * (1.0 - a)).astype(np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# ------------------------------------------------------------------------------------------ real images

@pytest.mark.parametrize("path", REAL, ids=[p.stem for p in REAL])
def test_prepare_real_rgba_uses_alpha_and_centres(path):
    p = prepare_image(path, size=512, margin=0.1)
    assert p.mask_source == "alpha"
    assert p.rgba.shape == (512, 512, 4) and p.rgba.dtype == np.uint8
    assert p.mask.shape == (512, 512) and p.mask.dtype == bool
    assert p.cond_518.shape == (3, 518, 518) and p.cond_518.dtype == np.float32
    assert p.cond_1022.shape == (3, 1022, 1022) and p.cond_1022.dtype == np.float32
    x0, y0, x1, y1 = _bbox(p.mask)
    assert abs((x0 + x1) / 2 - 256) <= 1.5 and abs((y0 + y1) / 2 - 256) <= 1.5
    assert abs(max(x1 - x0, y1 - y0) - 0.8 * 512) <= 2.5
    # the corner is transparent -> white after compositing -> (1 - mean) / std
    white = (1.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(p.cond_518[:, 0, 0], white, atol=1e-5)
    np.testing.assert_allclose(p.cond_1022[:, -1, -1], white, atol=1e-5)
    # the crop box maps the source bbox: it is a square about 1 / 0.8 the object's longer side
    src = load_image(path)
    sx0, sy0, sx1, sy1 = _bbox(src[..., 3] >= 128)
    bx0, by0, bx1, by1 = p.crop_box
    assert abs((bx1 - bx0) - max(sx1 - sx0, sy1 - sy0) / 0.8) <= 2 and abs((bx1 - bx0) - (by1 - by0)) <= 1


def test_crop_keeps_the_object_pixels():
    """The object's colours survive the crop: mean colour of masked pixels matches the source's."""
    path = _real("typical_misc_crate.png")
    src = load_image(path)
    p = prepare_image(path, size=719, margin=0.1)
    a, b = src[src[..., 3] == 255, :3].mean(0), p.rgba[p.rgba[..., 3] == 255, :3].mean(0)
    np.testing.assert_allclose(a, b, atol=3.0)


@pytest.mark.parametrize("name", ["typical_building_castle.png", "typical_misc_crate.png",
                                  "typical_misc_mailbox.png", "typical_humanoid_dwarf.png"])
def test_grabcut_matches_alpha_on_white_and_grey(name):
    rgba = load_image(_real(name))
    truth = rgba[..., 3] >= 128
    for background in (255, 128):
        mask = segment_grabcut(_over(rgba, background))
        assert mask.shape == truth.shape and mask.dtype == bool
        assert _iou(mask, truth) > 0.85, (name, background)


def test_prepare_rgb_picture_falls_back_to_grabcut(tmp_path):
    from PIL import Image

    rgba = load_image(_real("typical_misc_mailbox.png"))
    out = tmp_path / "mailbox.jpg"
    Image.fromarray(_over(rgba, 255)).save(out, quality=95)
    p = prepare_image(out, size=256)
    assert p.mask_source == "grabcut"
    ref = prepare_image(_real("typical_misc_mailbox.png"), size=256)
    assert _iou(p.mask, ref.mask) > 0.85
    with pytest.raises(InputImageError, match="no usable alpha"):
        prepare_image(out, segmenter="alpha")


def test_alpha_is_informative_rules():
    rgba = np.zeros((100, 100, 4), np.uint8)
    assert not alpha_is_informative(rgba)                       # constant alpha
    rgba[40:60, 40:60, 3] = 255
    assert alpha_is_informative(rgba)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    assert not alpha_is_informative(rgba)                       # covers > 99%
    with pytest.raises(InputImageError):
        alpha_is_informative(np.zeros((10, 10, 3), np.uint8))


def test_grabcut_helpers_fill_holes_and_keep_largest():
    mask = np.zeros((50, 50), bool)
    mask[10:40, 10:40] = True
    mask[20:25, 20:25] = False                                    # a hole
    mask[2:4, 45:48] = True                                       # a speck
    out = segmentation.fill_holes(segmentation.largest_component(mask))
    assert out[22, 22] and not out[3, 46] and out.sum() == 900


# ------------------------------------------------------------------------------------------ decoding

def test_png_16bit_grey_and_rgba_are_rounded(tmp_path):
    import cv2
    from PIL import Image

    grey = np.array([[0, 255, 32896, 65535], [128, 129, 300, 65280]], np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    out = load_image(tmp_path / "g16.png")
    expected = np.round(grey / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 3], 255)
    bgra = np.zeros((2, 4, 4), np.uint16)
    bgra[..., 2], bgra[..., 1], bgra[..., 0], bgra[..., 3] = grey, 65535 - grey, 1000, grey[::-1]
    cv2.imwrite(str(tmp_path / "c16.png"), bgra)
    out = load_image(tmp_path / "c16.png")
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 1], np.round((65535 - grey) / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(out[..., 2], 4)
    np.testing.assert_array_equal(out[..., 3], expected[::-1])


def test_palette_grey_alpha_jpeg_webp(tmp_path):
    from PIL import Image

    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "p.png", transparency=1)
    out = load_image(tmp_path / "p.png")
    assert tuple(out[0, 0]) == (255, 0, 0, 255) and out[1, 1, 3] == 0 and tuple(out[1, 1, :3]) == (0, 255, 0)
    la = Image.fromarray(np.dstack([np.full((3, 3), 77, np.uint8), np.full((3, 3), 9, np.uint8)]), "LA")
    la.save(tmp_path / "la.png")
    assert tuple(load_image(tmp_path / "la.png")[1, 1]) == (77, 77, 77, 9)
    rgb = np.zeros((16, 16, 3), np.uint8) + np.array([200, 30, 90], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=95)
    out = load_image(tmp_path / "x.jpg")
    assert np.abs(out[..., :3].astype(int) - rgb).max() <= 4 and (out[..., 3] == 255).all()
    rgba = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x.webp", lossless=True, exact=True)
    np.testing.assert_array_equal(load_image(tmp_path / "x.webp"), rgba)


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    img = np.zeros((20, 40, 3), np.uint8)                          # landscape 40 x 20
    img[:5, :5] = 255                                              # marker in the top-left corner
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = 6                                               # rotate 90 degrees clockwise to display
    im.save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=98)
    out = load_image(tmp_path / "o.jpg")
    assert out.shape == (40, 20, 4)                                # displayed portrait
    assert out[:5, -5:, 0].mean() > 200 and out[:5, :5, 0].mean() < 50   # marker now top-right


def test_icc_profile_is_converted_to_srgb(tmp_path):
    from PIL import Image, ImageCms

    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(rgb).save(tmp_path / "icc.png", icc_profile=srgb)
    assert np.abs(load_image(tmp_path / "icc.png")[..., :3].astype(int) - rgb).max() <= 2


def _png_bomb(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels (a decompression bomb's shape)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_bad_inputs_raise_one_line_errors(tmp_path):
    from PIL import Image

    cases = {}
    cases["not found"] = tmp_path / "missing.png"
    (tmp_path / "empty.png").write_bytes(b"")
    cases["empty"] = tmp_path / "empty.png"
    (tmp_path / "text.png").write_text("hello, I am not a picture")
    cases["not a readable image"] = tmp_path / "text.png"
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "f.png")
    data = (tmp_path / "f.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    cases["truncated"] = tmp_path / "trunc.png"
    (tmp_path / "huge.png").write_bytes(_png_bomb(100_000, 100_000))
    cases["too large"] = tmp_path / "huge.png"
    cases["not a file"] = tmp_path
    for expected, path in cases.items():
        with pytest.raises(InputImageError, match=expected) as err:
            load_image(path)
        assert "\n" not in str(err.value) and "fix:" in str(err.value)
    with pytest.raises(InputImageError, match="too large"):
        load_image(tmp_path / "f.png", max_pixels=1000)
    with pytest.raises(InputImageError, match="decompression bomb"):   # Pillow's own guard, limit lifted
        load_image(tmp_path / "huge.png", max_pixels=10**12)


def test_prepare_rejects_bad_arguments():
    path = _real("typical_misc_lantern.png")
    with pytest.raises(ConfigError, match="unknown segmenter"):
        prepare_image(path, segmenter="magic")
    with pytest.raises(ConfigError, match="margin"):
        prepare_image(path, margin=0.6)


# ------------------------------------------------------------------------------------------ ONNX segmenter

@pytest.fixture(scope="module")
def luminance_model(tmp_path_factory):
    """A real ONNX model: foreground = luminance < 0.95 (dark object on white), exported by torch."""
    import warnings

    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")

    class Luminance(torch.nn.Module):
        def forward(self, x):
            lum = 0.2126 * x[:, 0:1] + 0.7152 * x[:, 1:2] + 0.0722 * x[:, 2:3]
            return (lum < 0.95).float()

    folder = tmp_path_factory.mktemp("onnx")
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind, dyn in (("static", None), ("dynamic", {"x": {2: "h", 3: "w"}, "y": {2: "h", 3: "w"}})):
            paths[kind] = folder / f"lum_{kind}.onnx"
            torch.onnx.export(Luminance(), torch.zeros(1, 3, 96, 128), str(paths[kind]), input_names=["x"],
                              output_names=["y"], dynamic_axes=dyn, dynamo=False)
    return paths


def _disc_picture() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:300, 0:400]
    disc = (xx - 210) ** 2 + (yy - 140) ** 2 < 80 ** 2
    rgb = np.full((300, 400, 3), 255, np.uint8)
    rgb[disc] = (40, 90, 160)
    return rgb, disc


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_onnx_segmenter_runs_a_real_model(luminance_model, kind):
    rgb, disc = _disc_picture()
    mask = segment_onnx(rgb, luminance_model[kind])
    assert mask.shape == disc.shape and mask.dtype == bool
    # static: the model sees a 128 x 96 copy (3.1x smaller), so edges are ~1.5 px off; dynamic: 1024 px
    assert _iou(mask, disc) > (0.95 if kind == "static" else 0.98)
    assert not mask[:, :50].any()


def test_prepare_with_onnx_and_mask_errors(luminance_model, tmp_path):
    from PIL import Image

    rgb, disc = _disc_picture()
    Image.fromarray(rgb).save(tmp_path / "disc.png")
    p = prepare_image(tmp_path / "disc.png", segmenter=f"onnx:{luminance_model['static']}", size=200)
    assert p.mask_source.startswith("onnx:")
    x0, y0, x1, y1 = _bbox(p.mask)
    assert abs((x0 + x1) / 2 - 100) <= 1.5 and abs(max(x1 - x0, y1 - y0) - 160) <= 3
    Image.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(tmp_path / "white.png")
    with pytest.raises(InputImageError, match="object mask is empty"):
        prepare_image(tmp_path / "white.png", segmenter=f"onnx:{luminance_model['dynamic']}")
    Image.fromarray(np.full((64, 64, 3), 10, np.uint8)).save(tmp_path / "dark.png")
    with pytest.raises(InputImageError, match="fills the frame") as err:
        prepare_image(tmp_path / "dark.png", segmenter=f"onnx:{luminance_model['dynamic']}")
    assert "background" in str(err.value)


def test_onnx_segmenter_errors(luminance_model, tmp_path, monkeypatch):
    rgb, _ = _disc_picture()
    with pytest.raises(ConfigError, match="not found"):
        segment_onnx(rgb, tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ConfigError, match="cannot be loaded"):
        segment_onnx(rgb, tmp_path / "junk.onnx")
    segmentation._onnx_session.cache_clear()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)          # import now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"assetgen\[onnx\]"):
        segment_onnx(rgb, luminance_model["static"])
    monkeypatch.undo()
    segmentation._onnx_session.cache_clear()


def test_unusable_alpha_is_said_and_grabcut_used(tmp_path):
    """An alpha channel whose object covers > 99 % of the frame is not a cut-out: the mask comes from
    GrabCut and ``notes`` says the alpha channel was ignored (the CLI prints it)."""
    from PIL import Image

    from engine.io.image_input import prepare_image

    rgb = np.full((96, 96, 3), 235, np.uint8)
    rgb[30:70, 25:75] = (160, 40, 30)
    alpha = np.full((96, 96), 255, np.uint8)
    alpha[0, 0] = 0                                     # one transparent pixel: alpha not constant
    path = tmp_path / "nearly_opaque.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    prepared = prepare_image(path, size=64)
    assert prepared.mask_source == "grabcut"
    assert len(prepared.notes) == 1 and "alpha channel was ignored" in prepared.notes[0]


def _crop_interleaved(rgba: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The crop's resampling on the interleaved image (the plain way): premultiply, warp (cubic), divide."""
    import cv2

    a = rgba[..., 3:].astype(np.float32) / 255.0
    premult = np.concatenate([rgba[..., :3] * a, a * np.float32(255.0)], axis=-1).astype(np.float32)
    out = cv2.warpAffine(premult, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)
    alpha = np.clip(out[..., 3], 0.0, 255.0)
    crop = np.empty((size, size, 4), np.uint8)
    crop[..., :3] = np.clip(np.round(out[..., :3] / np.maximum(alpha[..., None] / 255.0, 1e-6)), 0, 255)
    crop[..., 3] = np.round(alpha)
    crop[alpha < 0.5, :3] = 0
    return crop


@pytest.mark.parametrize("name", ["typical_misc_crate.png", "T.png"])
def test_planar_crop_equals_the_interleaved_resampling(name):
    """The crop resamples one contiguous plane per channel: byte-identical to the interleaved image's."""
    from engine.io.image_input import ALPHA_THRESHOLD, _centred_crop

    rgba = load_image(_real(name))
    mask = rgba[..., 3] >= ALPHA_THRESHOLD
    ys, xs = np.nonzero(mask)
    side = max(xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) / 0.8
    cx, cy = (xs.min() + xs.max() + 1) / 2.0, (ys.min() + ys.max() + 1) / 2.0
    size = int(np.ceil(side)) + 64                                     # upscale: the cubic warp only
    s = size / side
    m = np.array([[s, 0.0, (size / 2.0 - 0.5) - s * (cx - 0.5)],
                  [0.0, s, (size / 2.0 - 0.5) - s * (cy - 0.5)]])
    crop, _ = _centred_crop(rgba, mask, 0.1, size)
    assert np.array_equal(crop, _crop_interleaved(rgba, m, size))
