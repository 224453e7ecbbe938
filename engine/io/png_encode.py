"""PNG encoding of RGB8 textures for the GLB: fixed "Up" filter, zlib deflate in row bands on threads.

Output: signature, IHDR (8-bit truecolour, no interlace), one IDAT, IEND; no colour-management chunks
(iCCP / sRGB / gAMA / cHRM), so viewers take the glTF meaning (sRGB base colour, linear normal map).

- filter: every scanline uses PNG filter 2 (Up: byte minus the byte above; the first row's "above" is
  zero, per the PNG spec). Textures are smooth in v, so Up compresses about as well as Pillow's adaptive
  per-row choice (crate base colour 2048^2: 2.047 vs 2.041 MB) while its selection costs nothing -- Pillow
  spends ~100 ms of its ~180 ms at zlib level 1 choosing filters on the 2-core CI machine.
- deflate: the filtered rows are cut into bands of ``BAND_ROWS`` rows; each band is deflated on its own
  (raw deflate, sync-flushed so it ends on a byte boundary, the last one finished) and the bands are
  concatenated behind one zlib header, with the Adler-32 of all filtered bytes at the end: one valid zlib
  stream. Bands restart the LZ77 window (+0.1 % bytes at 256 rows) and run in parallel threads (zlib and
  numpy release the GIL). The band split depends only on the image height, never on the thread count, so
  the bytes are the same on every machine.

Reads H*W*3 bytes, writes H*(W*3+1) filtered bytes once (a temporary), then the compressed stream.
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
BAND_ROWS = 256
_UP = 2
_ZLIB_HEADER = {1: b"\x78\x01", 2: b"\x78\x5e", 3: b"\x78\x5e", 4: b"\x78\x5e", 5: b"\x78\x5e",
                6: b"\x78\x9c", 7: b"\x78\xda", 8: b"\x78\xda", 9: b"\x78\xda"}


def encode_png(rgb: np.ndarray, level: int = 1, strategy: int = zlib.Z_DEFAULT_STRATEGY,
               threads: int | None = None) -> bytes:
    """PNG bytes of ``rgb`` (uint8 [H, W, 3], any strides; row 0 at the top).

    level: zlib level 1-9; strategy: a zlib strategy (``zlib.Z_DEFAULT_STRATEGY``, ``zlib.Z_RLE``, ...);
    threads: worker threads for the bands (default: the usable cores, at most the band count). The bytes
    do not depend on ``threads``.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise ValueError(f"encode_png takes uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    if level not in _ZLIB_HEADER:
        raise ValueError(f"zlib level {level} not in 1..9")
    height, width = rgb.shape[:2]
    rows = rgb.reshape(height, width * 3)  # [H, W*3] (copies only if not row-contiguous)
    starts = list(range(0, height, BAND_ROWS))
    bands = [(start, min(start + BAND_ROWS, height), start + BAND_ROWS >= height) for start in starts]

    def band(job: tuple[int, int, bool]) -> tuple[bytes, int, int]:
        start, stop, last = job
        filtered = _up_filtered(rows, start, stop)  # [stop-start, W*3+1] uint8
        deflate = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
        body = deflate.compress(filtered) + deflate.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
        return body, zlib.adler32(filtered), filtered.nbytes

    workers = min(len(bands), threads or _usable_cores())
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="png") as pool:
            parts = list(pool.map(band, bands))
    else:
        parts = [band(job) for job in bands]
    checksum = parts[0][1]
    for _, adler, length in parts[1:]:
        checksum = _adler32_combine(checksum, adler, length)
    idat = b"".join([_ZLIB_HEADER[level], *(body for body, _, _ in parts), struct.pack(">I", checksum)])
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour, deflate, no interlace
    return b"".join([SIGNATURE, _chunk(b"IHDR", ihdr), _chunk(b"IDAT", idat), _chunk(b"IEND", b"")])


def _up_filtered(rows: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Scanlines start..stop-1 with filter byte 2 (Up): uint8 [stop-start, W*3+1]."""
    out = np.empty((stop - start, rows.shape[1] + 1), np.uint8)
    out[:, 0] = _UP
    if start == 0:
        out[0, 1:] = rows[0]                                   # the row above the image is zero
    else:
        np.subtract(rows[start], rows[start - 1], out=out[0, 1:])
    np.subtract(rows[start + 1:stop], rows[start:stop - 1], out=out[1:, 1:])  # uint8: wraps mod 256
    return out


def _adler32_combine(adler1: int, adler2: int, length2: int) -> int:
    """Adler-32 of A + B from those of A and B and len(B) (zlib's adler32_combine)."""
    base = 65521
    rem = length2 % base
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % base
    sum1 = (sum1 + (adler2 & 0xFFFF) + base - 1) % base
    sum2 = (sum2 + (adler1 >> 16) + (adler2 >> 16) + base - rem) % base
    return (sum2 << 16) | sum1


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return b"".join([struct.pack(">I", len(payload)), kind, payload,
                     struct.pack(">I", zlib.crc32(payload, zlib.crc32(kind)))])


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
