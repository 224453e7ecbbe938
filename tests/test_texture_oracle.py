"""The texture-fusion oracle benchmark (benchmarks/texture/oracle.py, baseline.py): metrics against direct
formulas, the held-back cameras, and the whole benchmark at tiny sizes on one asset (CUDA simulator)."""

from __future__ import annotations

import csv
import math

import numpy as np
from scipy.ndimage import gaussian_filter

from benchmarks.texture import oracle
from engine.texture.views import camera_rig


def _ssim_direct(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Wang et al. SSIM with scipy's Gaussian filter (sigma 1.5, radius 5 = 11 taps), valid positions."""
    c1, c2, h = 0.01 ** 2, 0.03 ** 2, 5
    maps = []
    for v in range(a.shape[0]):
        per = []
        for c in range(3):
            x, y = a[v, ..., c].astype(np.float64), b[v, ..., c].astype(np.float64)

            def g(t):
                return gaussian_filter(t, 1.5, truncate=h / 1.5)[h:-h, h:-h]
            mx, my = g(x), g(y)
            sxx, syy, sxy = g(x * x) - mx ** 2, g(y * y) - my ** 2, g(x * y) - mx * my
            per.append((2 * mx * my + c1) * (2 * sxy + c2) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2)))
        maps.append(np.mean(per, axis=0))
    return float(np.stack(maps)[mask[:, h:-h, h:-h]].mean())


def test_psnr_and_ssim_against_direct_formulas():
    rng = np.random.default_rng(0)
    a = rng.random((2, 40, 40, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
    mask = np.zeros((2, 40, 40), bool)
    mask[:, 5:35, 8:30] = True
    mse = np.mean((a[mask].astype(np.float64) - b[mask]) ** 2)
    assert math.isclose(oracle.psnr(a, b, mask), 10 * np.log10(1 / mse), rel_tol=1e-9)
    assert oracle.psnr(a, a, mask) == float("inf")
    got, want = oracle.ssim(a, b, mask), _ssim_direct(a, b, mask)
    assert abs(got - want) < 1e-9 and 0.3 < got < 0.99
    assert abs(oracle.ssim(a, a, mask) - 1.0) < 1e-12


def test_held_back_cameras_lie_between_the_rig_views():
    held = oracle.held_back_cameras()
    rig = [np.asarray(c.direction) for c in camera_rig()]
    assert len(held) == 8
    for i, cam in enumerate(held):
        d = np.asarray(cam.direction)
        assert abs(np.linalg.norm(d) - 1) < 1e-9 and math.isclose(d[1], 0.5 if i % 2 == 0 else -0.5)
        assert min(np.degrees(np.arccos(np.clip(rig_d @ d, -1, 1))) for rig_d in rig) > 25.0


def test_oracle_benchmark_tiny_on_one_asset(tmp_path, shared_dir):
    out, table = tmp_path / "rows.csv", tmp_path / "oracle.md"
    rows = oracle.main(["--device", "cpu", "--atlas", "96", "--view-px", "48", "--eval-px", "64",
                        "--faces", "400", "--assets", "spot", "--repeats", "1",
                        "--cache", str(tmp_path / "c"), "--shared", str(shared_dir), "--out", str(table),
                        "--csv", str(out)])
    assert (tmp_path / "c" / "spot.npz").is_file() and (tmp_path / "c" / "manifest.json").is_file()
    (row,) = rows
    assert "error" not in row and row["low_faces"] <= 400
    for name in oracle.METHODS:
        assert 12.0 < row[f"psnr_{name}"] < 60.0 and 0.5 < row[f"ssim_{name}"] <= 1.0
    assert abs(row["psnr_ours"] - row["psnr_cpu_ref"]) < 1.5          # same maths up to the filter
    assert row["unfilled_texels"] == 0 and 0 < row["known_texels"] < row["valid_texels"]
    text = table.read_text()
    assert "| spot | " in text and "| **mean** |" in text
    with out.open() as fh:
        got = {(r["variant"], r["metric"]) for r in csv.DictReader(fh)}
    assert {("ours:spot", "heldback_psnr"), ("baseline:spot", "heldback_ssim"),
            ("cpu_ref:spot", "heldback_psnr"), ("precompute:spot", "latency"),
            ("ours:spot", "latency"), ("ours:spot", "unfilled_share")} <= got


def test_degraded_views_are_seeded_and_bounded():
    from benchmarks.texture.degrade import Degradation, draws

    cfg = Degradation()
    g1, s1 = draws("spot", 10, cfg)
    g2, s2 = draws("spot", 10, cfg)
    assert np.array_equal(g1, g2) and np.array_equal(s1, s2)                 # both methods see the same views
    assert not np.array_equal(draws("duck", 10, cfg)[0], g1)
    assert np.all(np.abs(g1 - 1.0) <= 0.21) and np.all(np.linalg.norm(s1, axis=1) <= 1.0)


def test_oracle_degraded_host_tiny_on_one_asset(tmp_path, shared_dir):
    table = tmp_path / "oracle.md"
    rows = oracle.main(["--device", "host", "--degrade", "--atlas", "128", "--view-px", "64",
                        "--eval-px", "64", "--faces", "400", "--assets", "spot", "--repeats", "1",
                        "--methods", "ours", "baseline", "--cache", str(tmp_path / "c"),
                        "--shared", str(shared_dir), "--out", str(table)])
    (row,) = rows
    assert "error" not in row and len(row["true_gains"]) == 10 and len(row["ours_gains"]) == 10
    for name in ("ours", "baseline"):
        assert 12.0 < row[f"psnr_{name}"] < 60.0
    assert "DEGRADED" in table.read_text()
