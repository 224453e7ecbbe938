"""GPU 3D inpainting and gutter dilation (engine.texture.inpaint_gpu) vs the CPU references inpaint_3d and
dilate_gutter (CUDA simulator on a small atlas of a real asset; a 1024^2 atlas under the gpu marker)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import asset_path

from engine.errors import ConfigError
from engine.geometry.mesh import TriMesh
from engine.texture.inpaint import NEUTRAL_COLOUR, dilate_gutter, inpaint_3d
from engine.texture.inpaint_gpu import dilate_gutter_gpu, inpaint_gpu, plan_inpaint, texel_world_size_gpu
from triton_kernels.numba_cuda import kernel_device


def _spot_texels(faces: int, atlas: int):
    from engine.geometry.simplify import simplify_qem
    from engine.geometry.uv_unwrap import unwrap_uv
    from engine.io.asset_load import load_mesh
    from engine.texture.backproject import texel_geometry
    from engine.texture.views import normalize_to_sphere

    src = load_mesh(asset_path("spot"))
    v, _, _ = normalize_to_sphere(src.vertices)
    mesh, _ = simplify_qem(TriMesh(v, src.faces), faces)
    mesh, _ = unwrap_uv(mesh, atlas)
    return texel_geometry(mesh, atlas)


def _case(tx):
    pos = tx.position
    known = tx.valid & (pos[..., 2] > 0.0) & (pos[..., 1] < 0.3)            # front-lower part observed
    col = np.stack([pos[..., 0] * 0.5 + 0.5, np.sin(5 * pos[..., 1]) * 0.5 + 0.5, pos[..., 2]], -1)
    return known, np.where(known[..., None], col, np.nan).astype(np.float32)


def _dev(tx, known, atlas):
    dev = kernel_device()
    return [torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in
            (atlas, known, tx.position.astype(np.float32), tx.normal.astype(np.float32), tx.valid)]


@pytest.fixture(scope="module")
def spot96(shared_dir):
    return _spot_texels(1500, 96)


def test_inpaint_matches_reference_on_spot(spot96):
    tx = spot96
    known, atlas = _case(tx)
    stats: dict = {}
    ref = inpaint_3d(atlas, known, tx, k=8, stats=stats)
    out, st = inpaint_gpu(*_dev(tx, known, atlas), k=8)
    out = out.cpu().numpy()
    v = tx.valid
    assert st["inpaint_unfilled"] == 0 and np.isfinite(out[v]).all()
    assert st["inpaint_targets"] == stats["inpaint_targets"] > 500
    assert st["inpaint_rounds"] == stats["inpaint_rounds"] >= 3 and not st["neutral_fill"]
    np.testing.assert_allclose(out[v], ref[v], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out[known], atlas[known])
    assert np.isnan(out[~v]).all()                                           # outside the charts: untouched
    from engine.texture.inpaint import texel_world_size

    assert texel_world_size_gpu(*_dev(tx, known, atlas)[2:5:2]) == texel_world_size(tx.position, v)


def test_inpaint_fallbacks(spot96):
    tx = spot96
    known, atlas = _case(tx)
    a, kn, pos, nrm, valid = _dev(tx, known, atlas)
    grey, st = inpaint_gpu(torch.zeros_like(a), torch.zeros_like(kn), pos, nrm, valid)
    assert st["neutral_fill"] and (grey[valid] == NEUTRAL_COLOUR).all() and (grey[~valid] == 0).all()
    same, st = inpaint_gpu(torch.nan_to_num(a), valid.clone(), pos, nrm, valid)
    assert st["inpaint_targets"] == 0 and torch.equal(same, torch.nan_to_num(a))
    # a known texel with a NaN colour is treated as unobserved and filled
    bad = a.clone()
    first = torch.nonzero(kn.view(-1))[0]
    bad.view(-1, 3)[first] = float("nan")
    fixed, st = inpaint_gpu(bad, kn, pos, nrm, valid)
    assert st["inpaint_nonfinite_known"] == 1 and st["inpaint_unfilled"] == 0
    assert torch.isfinite(fixed[valid]).all()
    with pytest.raises(ConfigError, match="k=17"):
        plan_inpaint(kn, pos, nrm, valid, k=17)
    with pytest.raises(ConfigError, match="position"):
        plan_inpaint(kn, pos[:-1], nrm, valid)
    with pytest.raises(ConfigError, match="known"):
        plan_inpaint(kn.float(), pos, nrm, valid)


def _source_distance(out: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Distance from every texel to the texel whose coordinates its colour holds (inf when unchanged)."""
    r, c = np.indices(valid.shape)
    d = np.hypot(out[..., 0] - r, out[..., 1] - c)
    return np.where(out[..., 0] < 0, np.inf, d)


def test_dilate_gutter_matches_edt():
    from scipy.ndimage import distance_transform_edt

    dev = kernel_device()
    rng = np.random.default_rng(0)
    valid = np.zeros((40, 48), bool)
    for _ in range(6):
        r, c, h, w = rng.integers(0, 36), rng.integers(0, 44), rng.integers(1, 9), rng.integers(1, 9)
        valid[r:r + h, c:c + w] = True
    valid[5, 40] = True                                                      # an isolated texel
    coords = np.stack(np.indices(valid.shape), -1).astype(np.float32)
    atlas = np.where(valid[..., None], coords, -1.0).astype(np.float32)      # colour = own coordinates
    edt = distance_transform_edt(~valid)
    for pixels in (0, 3, 7, None):
        out = dilate_gutter_gpu(torch.from_numpy(atlas).to(dev), torch.from_numpy(valid).to(dev), pixels)
        out = out.cpu().numpy()
        ref = dilate_gutter(atlas, valid, pixels)
        filled = out[..., 0] >= 0
        np.testing.assert_array_equal(filled, ref[..., 0] >= 0)               # same texels filled
        np.testing.assert_allclose(_source_distance(out, valid)[filled], edt[filled], atol=1e-9)
        unique = np.isclose(_source_distance(ref, valid), edt)               # scipy's pick is a nearest too
        assert unique[filled].all()
    rgb = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    got = dilate_gutter_gpu(torch.from_numpy(rgb).to(dev), torch.from_numpy(valid).to(dev), 2).cpu().numpy()
    assert got.dtype == np.uint8 and (got[valid] == rgb[valid]).all()
    with pytest.raises(ConfigError, match="disagree"):
        dilate_gutter_gpu(torch.from_numpy(rgb[:5]).to(dev), torch.from_numpy(valid).to(dev))


def test_benchmark_runs_on_cpu(shared_dir, tmp_path):
    from benchmarks.texture.inpaint_gpu import main

    out = tmp_path / "inpaint.md"
    main(["--device", "cpu", "--atlas", "128", "--faces", "800", "--assets", "spot", "--repeats", "1",
          "--csv", str(tmp_path / "rows.csv"), "--out", str(out)])
    text = out.read_text()
    rounds = re.search(r"rounds \((\d+), (\d+)\)", text)
    assert "cpu_inpaint" in text and "unfilled 0" in text and rounds and rounds[1] == rounds[2]
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == 1 + 2 + 5


@pytest.mark.gpu
def test_inpaint_matches_reference_on_gpu_1024(shared_dir):
    tx = _spot_texels(20000, 1024)
    known, atlas = _case(tx)
    ref = inpaint_3d(atlas, known, tx, k=8)
    out, st = inpaint_gpu(*_dev(tx, known, atlas), k=8)
    out = out.cpu().numpy()
    assert st["inpaint_unfilled"] == 0
    err = np.abs(out[tx.valid] - ref[tx.valid]).max(-1)
    assert (err <= 1e-5).mean() > 0.999 and err.max() < 0.05                # ties may pick another texel
    edt_ref = dilate_gutter(ref, tx.valid, 16)
    dil = dilate_gutter_gpu(torch.from_numpy(ref).cuda(), torch.from_numpy(tx.valid).cuda(), 16).cpu().numpy()
    assert (np.isnan(dil) == np.isnan(edt_ref)).all()
