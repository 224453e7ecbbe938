"""Floater removal (engine/geometry/floaters.py): area-fraction rule, largest piece kept, compaction,
attributes carried, bad fraction rejected, and a real scan with added debris."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asset_path
from test_simplify import read_obj, uv_sphere

from engine.errors import ConfigError
from engine.geometry.floaters import component_labels, remove_floaters
from engine.geometry.mesh import TriMesh, face_areas


def concat(*meshes: TriMesh) -> TriMesh:
    verts, faces, base = [], [], 0
    for m in meshes:
        verts.append(m.vertices)
        faces.append(m.faces + base)
        base += m.num_vertices
    return TriMesh(np.concatenate(verts), np.concatenate(faces))


def moved(m: TriMesh, scale: float, offset) -> TriMesh:
    return TriMesh(m.vertices * scale + np.asarray(offset, dtype=np.float32), m.faces.copy())


def test_small_component_removed_and_vertices_compacted():
    big = uv_sphere(12)
    blob = moved(uv_sphere(6), 0.05, [3.0, 0.0, 0.0])              # area share 0.0025 < 0.01
    mid = moved(uv_sphere(6), 0.3, [-3.0, 0.0, 0.0])               # area share ~0.08: kept
    out, removed = remove_floaters(concat(big, blob, mid), 0.01)
    assert removed == 1
    assert out.num_faces == big.num_faces + mid.num_faces
    assert out.num_vertices == big.num_vertices + mid.num_vertices
    np.testing.assert_array_equal(out.vertices[: big.num_vertices], big.vertices)  # order preserved
    assert out.vertices[:, 0].max() < 2.0                           # the blob at x = 3 is gone
    n, _ = component_labels(out.num_vertices, out.faces)
    assert n == 2


def test_fraction_zero_keeps_all_and_largest_always_kept():
    pieces = concat(*(moved(uv_sphere(5), 1.0, [3.0 * i, 0, 0]) for i in range(4)))
    out, removed = remove_floaters(pieces, 0.0)
    assert removed == 0 and out.num_faces == pieces.num_faces
    scaled = concat(moved(uv_sphere(5), 1.0, [0, 0, 0]), *(moved(uv_sphere(5), 0.9, [3.0 * i, 0, 0])
                                                           for i in range(1, 4)))
    out, removed = remove_floaters(scaled, 0.9)                      # no piece has 90 %: keep the largest
    assert removed == 3 and out.num_faces == uv_sphere(5).num_faces
    assert np.abs(np.linalg.norm(out.vertices, axis=1) - 1.0).max() < 1e-5


def test_attributes_follow_vertices():
    m = concat(uv_sphere(8), moved(uv_sphere(4), 0.01, [5, 0, 0]))
    m.uvs = np.random.default_rng(0).random((m.num_vertices, 2)).astype(np.float32)
    out, removed = remove_floaters(m)
    assert removed == 1
    np.testing.assert_array_equal(out.uvs, m.uvs[: out.num_vertices])


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 2.0])
def test_bad_fraction(fraction):
    with pytest.raises(ConfigError):
        remove_floaters(uv_sphere(4), fraction)


def test_bunny_with_debris(shared_dir):
    bunny = read_obj(asset_path("bunny"))
    lo, hi = bunny.bounds()
    debris = [moved(uv_sphere(4), 0.002, hi + 0.01 * (i + 1)) for i in range(5)]
    out, removed = remove_floaters(concat(bunny, *debris), 0.01)
    assert removed == 5
    used = np.unique(bunny.faces)                                   # the scan has unreferenced vertices
    assert out.num_faces == bunny.num_faces and out.num_vertices == used.size
    assert face_areas(out.vertices, out.faces).sum() == pytest.approx(
        face_areas(bunny.vertices, bunny.faces).sum(), rel=1e-9)


def test_process_keeps_every_part_unless_asked(shared_dir):
    """The milk truck's wheels are parts under 1 % of its surface: ``process`` keeps them (its default
    input_floater_fraction is 0); --remove-floaters 0.01 removes them; generated meshes keep 1 %."""
    from engine.config import Device, PipelineConfig
    from engine.io.asset_load import load_mesh
    from engine.runtime.backends import select_backends
    from engine.stages.geometry import simplify

    source = load_mesh(asset_path("milktruck"))
    backends = select_backends(Device.CPU)
    n_in, _ = component_labels(source.num_vertices, source.faces)
    config = PipelineConfig.from_name("flash").with_overrides(faces=100_000)
    assert config.geometry.input_floater_fraction == 0.0 and config.geometry.floater_min_fraction == 0.01
    kept = simplify(source, geometry=config.geometry, backends=backends,
                    floater_fraction=config.geometry.input_floater_fraction)
    assert component_labels(kept["low"].num_vertices, kept["low"].faces)[0] == n_in
    assert kept["_note"].startswith("every part kept")
    asked = config.with_overrides(remove_floaters=0.01).geometry
    removed = simplify(source, geometry=asked, backends=backends,
                       floater_fraction=asked.input_floater_fraction)
    assert component_labels(removed["low"].num_vertices, removed["low"].faces)[0] < n_in
    assert "floaters removed" in removed["_note"]


@pytest.mark.parametrize("fraction", [-0.5, 1.0])
def test_remove_floaters_flag_checked(fraction):
    from engine.config import PipelineConfig

    with pytest.raises(ConfigError, match="floater fraction"):
        PipelineConfig.from_name("flash").with_overrides(remove_floaters=fraction)
