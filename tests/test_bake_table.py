"""The Table 2 / Table 4 harness without Blender: the glTF <-> Blender conventions of blender_bake.py, the
prepared-file round trip, the dense-mesh hash and the merge of result files into the markdown tables."""

from __future__ import annotations

import argparse
import json

import numpy as np
from meshes import icosphere

from benchmarks.geometry import bake_table, blender_bake, table2
from engine.geometry.mesh import TriMesh, vertex_normals
from engine.geometry.normal_bake import encode_normals


def test_blender_pixels_map_to_our_rows_and_encoding():
    size = 8
    rng = np.random.default_rng(0)
    n = rng.normal(size=(size, size, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)                  # our map's normals, row 0 = top
    blender_rows = n[::-1]                                            # Blender stores the bottom row first
    rgba = np.concatenate([blender_rows * 0.5 + 0.5, np.ones((size, size, 1))], axis=-1)
    got = blender_bake.pixels_to_map(rgba.astype(np.float32).ravel(), size)
    np.testing.assert_array_equal(got, encode_normals(n))


def test_texel_centres_agree_between_gltf_and_blender_uvs():
    """Our texel (r, c) has glTF centre ((c+.5)/S, (r+.5)/S); after the UV flip it must be the centre of
    Blender pixel (row S-1-r from the bottom, column c), the one pixels_to_map puts at our row r."""
    size = 16
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    ours = np.stack([(c + 0.5) / size, (r + 0.5) / size], -1).reshape(-1, 2)
    blender = blender_bake.gltf_to_blender_uv(ours)
    row_from_bottom = size - 1 - r.ravel()
    np.testing.assert_allclose(blender[:, 0], (c.ravel() + 0.5) / size, atol=1e-6)
    np.testing.assert_allclose(blender[:, 1], (row_from_bottom + 0.5) / size, atol=1e-6)
    marker = np.zeros((size, size, 4), np.float32)
    marker[row_from_bottom[37], c.ravel()[37], 0] = 1.0              # Blender buffer, bottom row first
    assert np.argwhere(blender_bake.pixels_to_map(marker.ravel(), size)[..., 0] == 255).tolist() == [
        [r.ravel()[37], c.ravel()[37]]]


def test_blender_inputs_match_our_normals_and_distance():
    v, f = icosphere(2)
    v = v * np.array([1.0, 0.5, 2.0], np.float32)
    np.testing.assert_allclose(blender_bake.area_weighted_normals(v, f), vertex_normals(v, f), atol=1e-6)
    d = blender_bake.bake_distance(v, f, 0.01)
    assert np.isclose(d, 0.01 * TriMesh(v, f).diagonal(), rtol=1e-6)


def test_low_file_round_trip_and_dense_hash(tmp_path):
    v, f = icosphere(1)
    rng = np.random.default_rng(1)
    low = TriMesh(v, f, normals=vertex_normals(v, f), uvs=rng.random((len(v), 2)).astype(np.float32),
                  tangents=rng.random((len(v), 4)).astype(np.float32))
    bake_table.save_low(tmp_path / "a.npz", low)
    back = bake_table.load_low(tmp_path / "a.npz")
    for name in ("vertices", "faces", "normals", "uvs", "tangents"):
        np.testing.assert_array_equal(getattr(back, name), getattr(low, name))
    h = bake_table.mesh_sha256(low)
    assert h == bake_table.mesh_sha256(TriMesh(v.copy(), f.copy()))
    v2 = v.copy()
    v2[3, 1] = np.nextafter(v2[3, 1], np.float32(9))                 # one ulp moves the hash
    assert bake_table.mesh_sha256(TriMesh(v2, f)) != h


def test_csv_file_per_device():
    assert bake_table.csv_for("cpu").name == "cpu.csv"
    assert bake_table.csv_for("NVIDIA H100 80GB HBM3").name == "h100.csv"
    assert bake_table.csv_for("NVIDIA H200").name == "h200.csv"


def _bake_run(method: str, latencies: list[list[float]], errors: list[float]) -> dict:
    rows = [{"asset": f"a{i}", "dense_faces": 1000 + i, "low_faces": 50, "latency_s": lat, "error_deg": e,
             "setup_s": 1.0, "threads": 2, "blender_version": "5.0.1"}
            for i, (lat, e) in enumerate(zip(latencies, errors))]
    return {"method": method, "device": "cpu", "machine": "test", "git_sha": "x", "size": 64, "repeats": 2,
            "points": 10, "prepared": {"resolution": 64, "faces": 50, "uv_resolution": 64, "assets": None},
            "skipped": None, "rows": rows}


def test_bake_table_merges_runs(tmp_path):
    files = []
    runs = {"ours_cpu": _bake_run("ours_cpu", [[1.0, 3.0], [4.0, 4.0]], [0.5, 1.5]),
            "blender": _bake_run("blender", [[2.0, 2.0], [6.0, 8.0]], [1.0, 2.0]),
            "ours_gpu": _bake_run("ours_gpu", [], []) | {"skipped": "CUDA is not available"}}
    for name, run in runs.items():
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(run))
    md = tmp_path / "t.md"
    bake_table.table(argparse.Namespace(table=[str(f) for f in files], md=str(md), no_csv=True))
    text = md.read_text()
    # ours_cpu: per-asset medians 2 and 4 -> mean 3, median 3, max 4; errors mean 1, max 1.5
    assert "| ours_cpu | cpu | 2 | 3.000 | 3.000 | 4.000 | 1.000 | 1.500 |" in text
    assert "| blender | cpu | 2 | 4.500 | 4.500 | 7.000 | 1.500 | 2.000 |" in text
    assert "skipped: CUDA is not available" in text
    assert "| a1 | 1,001 | 4.000 / 1.500 | 7.000 / 2.000 |" in text


def test_table2_merges_runs(tmp_path):
    def row(asset, target, lat, chamfer):
        return {"asset": asset, "target": target, "dense_faces": 10, "dense_sha256": "0", "latency_s": lat,
                "faces": target, "mesh": "m.npz", "chamfer": chamfer, "hausdorff": 1.0, "flipped_px": 3.0,
                "baked_mean": 2.0, "geo_mean": 4.0}

    run = {"method": "qem_ref", "device": "cpu", "machine": "test", "git_sha": "x", "resolution": 64,
           "repeats": 3, "points": 10, "view_px": 32, "bake_size": 64, "skipped": None,
           "rows": [row("a", 5000, [1.0, 2.0, 9.0], 10.0), row("b", 5000, [4.0, 4.0, 4.0], 20.0)]}
    pending = run | {"method": "qem_gpu", "rows": [{k: v for k, v in row("a", 5000, [1.0], 1.0).items()
                                                      if k != "chamfer"}]}
    for name, r in (("ref", run), ("gpu", pending)):
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    md = tmp_path / "t2.md"
    table2.table(argparse.Namespace(table=[str(tmp_path / "ref.json"), str(tmp_path / "gpu.json")],
                                    md=str(md), no_csv=True))
    text = md.read_text()
    # latency: medians 2 and 4 -> 3; Chamfer mean 15
    assert "| 5K | qem_ref | cpu | 2 | 3.000 | 15.0 | 1.00 | 3 | 2.00 | 4.00 | 5000 |" in text
    assert "- qem_gpu: no rows / quality missing" in text
