"""The bitmap packer's kernels against their references (engine/geometry/uv_pack.py): chart row spans vs
the per-texel conservative raster, first fit vs brute force, occupancy updates vs rebuilt tables; and the
projection-chart unwrapper's scale search: the same result whatever the number of packing threads."""

from __future__ import annotations

import numpy as np
import pytest
from meshes import icosphere

from engine.geometry.mesh import TriMesh
from engine.geometry.uv_fast import _LEVELS, _bisect_scale, unwrap_uv_fast
from engine.geometry.uv_pack import (
    _SLACK,
    _chart_rows,
    _first_fit,
    _occupy,
    _raster_conservative,
    _turn_height,
    first_fit_ref,
    occupancy_runs,
    pack_at,
    prepare_charts,
)


def _spans_ref(tri, ext, scale, pad, rot):
    """Dilated row spans of one chart from the per-texel raster (the packer's definition, plainly)."""
    off = pad + 1
    w, h = (int(np.floor(e * scale + _SLACK)) + 1 + 2 * off for e in (ext if rot == 0 else ext[::-1]))
    mask = np.zeros((h, w), bool)
    for t in tri:
        x, y = t[:, 0] * scale, t[:, 1] * scale
        if rot == 1:
            x, y = _turn_height(ext[1], scale) - y, x
        _raster_conservative(np.stack([x + off, y + off], 1), mask)
    lo, hi = np.full(h, w), np.zeros(h, np.int64)
    for r in np.flatnonzero(mask.any(axis=1)):
        cols = np.flatnonzero(mask[r])
        for d in range(max(r - pad, 0), min(r + pad + 1, h)):
            lo[d], hi[d] = min(lo[d], max(cols[0] - pad, 0)), max(hi[d], min(cols[-1] + pad + 1, w))
    return lo, hi


def test_chart_rows_matches_raster_conservative():
    rng = np.random.default_rng(1)
    for trial in range(120):
        n = int(rng.integers(1, 10))
        tri = rng.uniform(0, 1, (n, 3, 2)) * rng.uniform(0.1, 3, 2)
        if trial % 4 == 0:
            tri[0, 2] = tri[0, 1]                                        # a degenerate face
        if trial % 7 == 0:
            tri = np.round(tri * 4) / 4                                  # corners on texel lines
        tri -= tri.reshape(-1, 2).min(axis=0)
        ext = tri.reshape(-1, 2).max(axis=0)
        scale, pad = float(rng.choice([4.0, rng.uniform(1, 30)])), int(rng.integers(0, 4))
        maxdim = int(np.ceil(ext.max() * scale + 2 * _SLACK)) + 4 + 2 * pad
        lo, hi = np.zeros((2, maxdim), np.int64), np.zeros((2, maxdim), np.int64)
        bw, bh = _chart_rows(tri, ext, scale, pad, lo, hi, np.empty((4, maxdim), np.int64))
        for rot, h in ((0, bh), (1, bw)):
            ref_lo, ref_hi = _spans_ref(tri, ext, scale, pad, rot)
            assert len(ref_lo) == h
            np.testing.assert_array_equal(lo[rot, :h], ref_lo, err_msg=f"trial {trial} rot {rot}")
            np.testing.assert_array_equal(hi[rot, :h], ref_hi, err_msg=f"trial {trial} rot {rot}")


@pytest.mark.parametrize("size", [24, 70])
def test_first_fit_and_occupy_match_ref(size):
    rng = np.random.default_rng(size)
    occupied = np.zeros((size, size), bool)
    free, bmax, row_max = occupancy_runs(occupied)
    for step in range(60):
        bh, bw = (int(v) for v in rng.integers(1, size // 3, 2))
        lo = rng.integers(0, bw, bh)
        hi = np.minimum(lo + rng.integers(0, bw, bh), bw)
        lo[rng.uniform(size=bh) < 0.1] = bw                             # some empty rows
        y_stop = size if step % 3 else int(rng.integers(1, size))
        got = _first_fit(free, bmax, row_max, lo, hi, bw, bh, y_stop)
        assert got == first_fit_ref(occupied, lo, hi, bh, bw, y_stop), step
        if got[0] < 0:
            continue
        x, y = got
        for i in range(bh):
            if hi[i] > lo[i]:
                row_max[y + i] = _occupy(free, bmax, y + i, x + lo[i], x + hi[i])
                occupied[y + i, x + lo[i]:x + hi[i]] = True
        ref = occupancy_runs(occupied)
        for table, want in zip((free, bmax, row_max), ref):
            np.testing.assert_array_equal(table, want)


def test_pack_at_keeps_to_the_allowed_orientations():
    rng = np.random.default_rng(3)
    tris = rng.uniform(0, 1, (40, 3, 2)) * rng.uniform(0.2, 3, (40, 1, 2))
    prep = prepare_charts(tris.reshape(-1, 2), np.arange(120).reshape(-1, 3), np.arange(40))
    scale = 128 * np.sqrt(0.25 / prep[6])
    allowed = np.zeros((40, 2), bool)
    allowed[np.arange(40), np.arange(40) % 2] = True
    place = pack_at(prep, scale, 128, 1, allowed)
    assert place is not None and (place[:, 2] == np.arange(40) % 2).all()
    with pytest.raises(ValueError, match="allowed orientations"):
        pack_at(prep, scale, 128, 1, np.zeros((40, 2), bool))


@pytest.mark.parametrize("limit", [1.37, 2.9, 7.0])
def test_bisection_is_the_serial_one_for_any_worker_count(limit):
    """Speculative packing only changes which nodes are packed, not the walk: same scale, and every round
    packs at most ``workers`` candidates."""
    def fits_below(calls):
        def fits(scales):
            calls.append(len(scales))
            return [s < limit or 3.1 < s < 3.2 for s in scales]          # not monotone, as packing
        return fits

    results = []
    for workers in (1, 2, 3, 7, 16):
        calls: list[int] = []
        results.append(_bisect_scale(fits_below(calls), 1.0, 4.0, workers))
        assert max(calls) <= workers and (workers > 1 or len(calls) == _LEVELS)
    assert all(r == results[0] for r in results)


def test_unwrap_is_byte_identical_across_worker_counts():
    mesh = TriMesh(*icosphere(3))
    one, r1 = unwrap_uv_fast(mesh, resolution=256, workers=1)
    three, r3 = unwrap_uv_fast(mesh, resolution=256, workers=3)
    assert one.uvs.tobytes() == three.uvs.tobytes() and np.array_equal(one.faces, three.faces)
    assert r1.charts == r3.charts and r1.utilisation == r3.utilisation
