"""Partitioned parallel UV unwrap: unwrap_uv's contract, no overlapping charts, utilisation near serial
xatlas on a real asset, 1 and 2 workers, bad input; the quality measures it is judged by."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asset_path
from meshes import check_unwrap_contract, icosphere

from engine.errors import ConfigError, MeshError
from engine.geometry.mesh import TriMesh, clean_mesh, face_areas
from engine.geometry.uv_parallel import halo_faces, partition_faces, unwrap_uv_parallel
from engine.geometry.uv_quality import overlap_texels, uv_charts, uv_stretch
from engine.geometry.uv_unwrap import unwrap_uv


def check_contract(mesh: TriMesh, out: TriMesh, report, size: int) -> None:
    fid = check_unwrap_contract(mesh, out, report, size)
    live = np.flatnonzero(face_areas(mesh.vertices, mesh.faces) > 0)
    assert np.isin(live, fid).mean() > 0.9                                 # faces cover texels


def test_partition_is_area_balanced_and_halo_grows_by_rings():
    v, f = icosphere(3)
    part = partition_faces(v, f, 5)
    area = face_areas(v, f)
    shares = np.bincount(part, weights=area, minlength=5) / area.sum()
    assert set(np.unique(part)) == set(range(5)) and np.abs(shares - 0.2).max() < 0.02
    core = part == 0
    ring1 = halo_faces(f, core, len(v), 1)
    touching = np.isin(f, f[core]).any(axis=1)                             # faces sharing a vertex
    np.testing.assert_array_equal(ring1, touching)
    ring2 = halo_faces(f, core, len(v), 2)
    assert (ring2 >= ring1).all() and ring2.sum() > ring1.sum()


@pytest.mark.parametrize("workers", [1, 2])
def test_contract_and_no_overlap(workers):
    mesh = TriMesh(*icosphere(3))                                          # 1280 faces: 2 parts at 2 workers
    out, report = unwrap_uv_parallel(mesh, resolution=256, padding=2, workers=workers)
    check_contract(mesh, out, report, 256)
    assert report.charts >= 2 and report.utilisation > 0.3
    assert np.einsum("ij,ij->i", out.normals, out.vertices).min() > 0.99   # smooth radial normals
    assert uv_stretch(out.vertices, out.faces, out.uvs).l2 < 1.2


def test_overlap_check_detects_a_moved_chart():
    mesh = TriMesh(*icosphere(2))
    out, _ = unwrap_uv_parallel(mesh, resolution=128, workers=1)
    _, charts = uv_charts(out.faces, out.num_vertices)
    v0, v1 = np.unique(out.faces[charts == charts[0]]), np.unique(out.faces[charts != charts[0]])
    moved = out.uvs.copy()
    moved[v1] += out.uvs[v0].mean(0) - out.uvs[v1].mean(0)
    assert overlap_texels(moved, out.faces, 128) > 0


def test_stretch_of_known_maps():
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    iso = uv_stretch(v, f, v[:, :2] * 0.3)                                  # uniform scale: isometric
    assert iso.l2 == pytest.approx(1.0) and iso.linf == pytest.approx(1.0) and iso.collapsed == 0
    aniso = uv_stretch(v, f, v[:, :2] * [2.0, 1.0])                         # singular values 1/2, 1
    assert aniso.l2 == pytest.approx(np.sqrt((0.25 + 1) / 2) * np.sqrt(2))
    assert aniso.linf == pytest.approx(np.sqrt(2))
    flat = uv_stretch(v, f, np.zeros((4, 2)) + [[0, 0], [1, 0], [1, 0], [0, 0]])  # one collapsed face
    assert flat.collapsed == 2 and flat.l2 == np.inf


def test_utilisation_close_to_serial_on_bunny(shared_dir):
    from engine.geometry.simplify import simplify_qem
    from engine.io.asset_load import load_mesh

    mesh, _ = simplify_qem(clean_mesh(load_mesh(asset_path("bunny"))), 5000)
    serial, rs = unwrap_uv(mesh, resolution=512, padding=2)
    out, rp = unwrap_uv_parallel(mesh, resolution=512, padding=2, workers=2)
    check_contract(mesh, out, rp, 512)
    assert rp.utilisation > rs.utilisation - 0.03
    assert rp.charts <= 1.2 * rs.charts
    s, p = uv_stretch(serial.vertices, serial.faces, serial.uvs), uv_stretch(out.vertices, out.faces, out.uvs)
    assert p.l2 < 1.1 * s.l2 and p.collapsed <= s.collapsed + 5


def test_bad_and_odd_inputs():
    with pytest.raises(MeshError, match="no faces"):
        unwrap_uv_parallel(TriMesh(np.zeros((3, 3)), np.zeros((0, 3))))
    with pytest.raises(ConfigError, match="resolution"):
        unwrap_uv_parallel(TriMesh(*icosphere(0)), resolution=8)
    with pytest.raises(ConfigError, match="workers"):
        unwrap_uv_parallel(TriMesh(*icosphere(0)), workers=0)
    with pytest.raises(MeshError, match="normals"):
        unwrap_uv_parallel(TriMesh(*icosphere(0)).copy(normals=np.zeros((2, 3))))
    with pytest.raises(MeshError, match="no charts"):                      # only zero-area faces
        unwrap_uv_parallel(TriMesh(np.zeros((3, 3), np.float32), np.array([[0, 1, 2]], np.int32)))
    plane = TriMesh(np.array([[0, 0, 0], [1, 0, 0], [1, 0, 1], [0, 0, 1]], np.float32),
                    np.array([[0, 2, 1], [0, 3, 2]], np.int32))
    out, report = unwrap_uv_parallel(plane, resolution=64, workers=2)
    check_contract(plane, out, report, 64)
    v, f = icosphere(2)                                                     # plus degenerate faces
    f = np.concatenate([f, [[0, 0, 1], [3, 3, 3], [5, 6, 5]]]).astype(np.int32)
    mesh = TriMesh(v, f)
    out, report = unwrap_uv_parallel(mesh, resolution=128, workers=2)
    check_contract(mesh, out, report, 128)
