"""PNG encoding of textures (engine/io/png_encode.py): lossless through Pillow's decoder, valid chunks, and
bytes that depend only on the image (not on the thread count or the input's strides)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from engine.io.png_encode import BAND_ROWS, SIGNATURE, _adler32_combine, encode_png


def _decode(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def _chunks(png: bytes) -> list[tuple[str, bytes]]:
    assert png[:8] == SIGNATURE
    out, at = [], 8
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        payload = png[at + 8:at + 8 + length]
        assert struct.unpack(">I", png[at + 8 + length:at + 12 + length])[0] == zlib.crc32(kind + payload)
        out.append((kind.decode(), payload))
        at += 12 + length
    return out


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (BAND_ROWS - 1, 7), (BAND_ROWS, 2), (BAND_ROWS + 1, 9),
                                   (3 * BAND_ROWS + 17, 31)])
@pytest.mark.parametrize("strategy", [zlib.Z_DEFAULT_STRATEGY, zlib.Z_RLE])
def test_lossless_and_independent_of_threads(shape, strategy):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    image[: shape[0] // 2] //= 16                                  # some compressible rows too
    png = encode_png(image, 1, strategy)
    np.testing.assert_array_equal(_decode(png), image)
    assert encode_png(image, 1, strategy, threads=1) == png == encode_png(image, 1, strategy, threads=3)
    assert [kind for kind, _ in _chunks(png)] == ["IHDR", "IDAT", "IEND"]
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", _chunks(png)[0][1])
    assert (width, height, depth, colour) == (shape[1], shape[0], 8, 2)


def test_strided_input_and_levels():
    image = np.random.default_rng(1).integers(0, 256, (300, 200, 4), dtype=np.uint8)
    view = image[::-1, ::2, :3]                                    # not contiguous
    for level in (1, 6, 9):
        np.testing.assert_array_equal(_decode(encode_png(view, level)), view)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(image)
    with pytest.raises(ValueError, match="level"):
        encode_png(view, 0)


def test_band_checksums_combine_like_zlib():
    rng = np.random.default_rng(3)
    for la, lb in [(0, 5), (1, 1), (1000, 70000), (65521, 65522), (200000, 3)]:
        a, b = rng.bytes(la), rng.bytes(lb)
        assert _adler32_combine(zlib.adler32(a), zlib.adler32(b), lb) == zlib.adler32(a + b)
