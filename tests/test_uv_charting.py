"""Projection-charting kernels (triton_kernels/uv_charting.py) equal their plain-Python references on a
sphere, a random-label mesh and a chart folded over itself; the overlap count and regrowth can fail."""

from __future__ import annotations

import numpy as np
from meshes import icosphere

from engine.geometry.mesh import face_areas, face_normals
from engine.geometry.uv_fast import _components, face_neighbours
from triton_kernels.uv_charting import (
    merge_small_charts,
    merge_small_charts_ref,
    regrow_charts,
    regrow_charts_ref,
    self_overlap_cells,
    self_overlap_cells_ref,
    smooth_labels,
    smooth_labels_ref,
)

AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)


def _sphere():
    v, f = icosphere(2)
    n = face_normals(v, f).astype(np.float64)
    return v, f.astype(np.int64), n, face_areas(v, f), face_neighbours(f)


def test_smooth_labels_matches_reference_and_lowers_energy():
    _, f, n, a, nb = _sphere()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, len(f))
    cost = 1.0 - n @ AXES.T
    for lam in (0.0, 0.3, 2.0):
        got = smooth_labels(labels, cost, nb, lam, 8)
        np.testing.assert_array_equal(got, smooth_labels_ref(labels, cost, nb, lam, 8))

        def energy(lab):
            return cost[np.arange(len(f)), lab].sum() + lam * (lab[:, None] != lab[nb]).sum() / 2
        assert energy(got) <= energy(labels)
    assert (smooth_labels(labels, cost, nb, 0.0, 8) == np.argmax(n @ AXES.T, 1)).mean() > 0.99


def test_merge_small_charts_matches_reference():
    _, f, n, a, nb = _sphere()
    chart = np.argmax(n @ AXES.T, 1)
    chart = np.where(np.arange(len(f)) % 7 == 0, 6 + np.arange(len(f)) % 3, chart)    # scattered islands
    chart = _components(chart, nb)
    nc = chart.max() + 1
    nsum = np.zeros((nc, 3))
    np.add.at(nsum, chart, n * a[:, None])
    area = np.bincount(chart, weights=a)
    live = a > 0
    for small, min_cos in ((area.max() * 2, 0.3), (np.median(area), 0.6), (area.max() * 2, 0.99)):
        got = merge_small_charts(chart, nb, nsum, area, n, live, small, min_cos)
        np.testing.assert_array_equal(got, merge_small_charts_ref(chart, nb, nsum, area, n, live, small,
                                                                   min_cos))
        mean = np.zeros((got.max() + 1, 3))
        np.add.at(mean, got, n * a[:, None])
        mean /= np.linalg.norm(mean, axis=1, keepdims=True)
        parts = np.array([len(np.unique(chart[got == c])) for c in range(got.max() + 1)])
        merged = parts[got] > 1
        assert merged.any() or min_cos > 0.9
        assert ((n * mean[got]).sum(1)[merged] >= min_cos - 1e-12).all()          # merged charts stay valid


def _folded_strip(fold: bool = True):
    """A strip of 2 x 8 quads in the plane whose right half is folded back over the left (one chart)."""
    xs = np.array([0, 1, 2, 3, 4, 3.5, 2.5, 1.5, 0.5]) if fold else np.arange(9.0)
    uv = np.array([[x, y + 0.2 * (i > 4)] for i, x in enumerate(xs) for y in (0.0, 1.0)], np.float64)
    faces = []
    for i in range(8):
        a, b, c, d = 2 * i, 2 * i + 2, 2 * i + 3, 2 * i + 1
        faces += [[a, b, c], [a, c, d]]
    rot = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    return uv @ rot.T + [0.01234, 0.04321], np.array(faces, np.int64)        # no centre on an edge


def test_self_overlap_and_regrow_match_references_and_remove_the_fold():
    uv, faces = _folded_strip()
    chart = np.zeros(len(faces), np.int64)
    for cell in (0.1, 0.25):
        hits = self_overlap_cells(uv, faces, chart, cell)
        np.testing.assert_array_equal(hits, self_overlap_cells_ref(uv, faces, *_layout(chart), cell))
        assert hits[0] > 0
        nb = face_neighbours(faces)
        got = regrow_charts(uv, faces, chart, nb, np.array([True]), cell)
        np.testing.assert_array_equal(got, regrow_charts_ref(uv, faces, chart, nb, np.array([True]), cell))
        assert got.max() >= 1 and self_overlap_cells(uv, faces, got, cell).sum() == 0
    flat, _ = _folded_strip(fold=False)                                     # unfolded: no hit
    assert self_overlap_cells(flat, faces, chart, 0.1)[0] == 0


def _layout(chart):
    order = np.argsort(chart, kind="stable")
    return np.concatenate([[0], np.cumsum(np.bincount(chart))]), order


def test_self_overlap_split_over_threads_counts_the_same():
    from concurrent.futures import ThreadPoolExecutor

    uv, faces = _folded_strip()
    uv = np.concatenate([uv + [10.0 * k, 0.0] for k in range(5)])      # five folded strips, five charts
    faces = np.concatenate([faces + 18 * k for k in range(5)])
    chart = np.repeat(np.array([3, 0, 4, 1, 2]), 16)
    one = self_overlap_cells(uv, faces, chart, 0.1)
    np.testing.assert_array_equal(one, self_overlap_cells_ref(uv, faces, *_layout(chart), 0.1))
    assert (one > 0).all()
    with ThreadPoolExecutor(3) as pool:
        for parts in (2, 3, 5, 9):
            np.testing.assert_array_equal(self_overlap_cells(uv, faces, chart, 0.1, pool.map, parts), one)
