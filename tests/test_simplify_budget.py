"""``--faces N`` never yields more than N faces (engine/geometry/simplify.py, its guard levels in
simplify_guards.py, the topology floor in simplify_topology.py): a stalled strict pass is finished by the
relaxed levels, the reason for a short result is reported, and an unreachable budget is a one-line
ConfigError naming the fewest faces reachable -- raised before anything is written."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import asset_path
from meshes import icosphere, torus
from test_simplify import assert_manifold_oriented, grid_plane

from engine.errors import ConfigError
from engine.geometry.mesh import TriMesh, clean_mesh
from engine.geometry.simplify import _simplify_kernel, fixed_vertices, simplify_qem
from engine.geometry.simplify_guards import GUARD_LEVELS, QEM_POINT_ONLY
from engine.geometry.simplify_topology import face_floor, min_vertices_of_genus
from engine.io.asset_load import load_mesh
from triton_kernels.qem_host import _faces_ok, _guards_ok, _ring


def euler(m: TriMesh) -> int:
    f = m.faces.astype(np.int64)
    e = np.unique(np.sort(np.stack([f, np.roll(f, -1, axis=1)], 2).reshape(-1, 2), axis=1), axis=0)
    return np.unique(f).size - e.shape[0] + f.shape[0]


def suggested(err: ConfigError) -> int:
    return int(re.search(r"use --faces (\d+) or more", str(err)).group(1))


def marching_cubes_bob(resolution: int = 64) -> TriMesh:
    """Bob (genus 1) scaled into [-1, 1]^3 and remeshed by marching cubes (16K faces at 64^3)."""
    from engine.geometry.watertight import watertight_mesh

    raw = load_mesh(asset_path("bob"))
    lo, hi = raw.bounds()
    unit = TriMesh((raw.vertices - (lo + hi) / 2) * (2.0 / float(np.max(hi - lo))), raw.faces)
    return clean_mesh(watertight_mesh(unit, resolution))


def test_face_floor_of_known_shapes():
    assert [min_vertices_of_genus(g) for g in range(7)] == [4, 7, 10, 10, 11, 12, 12]   # Jungerman-Ringel
    v, f = icosphere(2)
    assert face_floor(f, v.shape[0]).faces == 4
    v, f = torus()
    floor = face_floor(f, v.shape[0])
    assert floor.faces == 14 and floor.closed_genus == (1,)            # Csaszar's 7-vertex torus
    two = np.vstack([f, f + v.shape[0]])
    assert face_floor(two, 2 * v.shape[0]).faces == 28 and face_floor(two, 2 * v.shape[0]).parts == 2
    plane = grid_plane(5)                                             # a disk bounded by 20 fixed edges
    floor = face_floor(plane.faces, plane.num_vertices)
    assert floor.faces == 18 and floor.boundary_edges == 20


def corner_lists(faces: np.ndarray, num_vertices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(head int64 [V], nxt int64 [3F], alive bool [F]): the simplifier's corner lists of a fresh mesh."""
    head, tail = np.full(num_vertices, -1, np.int64), np.full(num_vertices, -1, np.int64)
    nxt = np.full(3 * len(faces), -1, np.int64)
    for c, v in enumerate(np.asarray(faces).reshape(-1)):
        if head[v] == -1:
            head[v] = c
        else:
            nxt[tail[v]] = c
        tail[v] = c
    return head, nxt, np.ones(len(faces), bool)


def guards_ok(pos, faces, fa, fb, a, b, p, level, lists) -> bool:
    """``_guards_ok`` of collapse (a, b) -> p with a's faces fa and b's faces fb (int64 arrays)."""
    ring, nrm = np.empty(fa.size + fb.size, np.int64), np.empty((fa.size + fb.size, 7))
    m = _ring(pos, faces, fa, fa.size, fb, fb.size, a, b, ring, nrm)
    return _guards_ok(pos, faces, a, b, np.asarray(p, np.float64), level, *lists, ring, nrm, m)


def test_guards_without_fold_check_equal_the_turn_and_quality_checker():
    m = marching_cubes_bob(24)
    pos = m.vertices.astype(np.float64)
    rng = np.random.default_rng(0)
    vf = [[] for _ in range(m.num_vertices)]
    for i, tri in enumerate(m.faces):
        for v in tri:
            vf[v].append(i)
    lists = corner_lists(m.faces, m.num_vertices)
    for a, b in m.faces[rng.choice(m.num_faces, 200, replace=False), :2]:
        fa, fb = np.array(vf[a], np.int64), np.array(vf[b], np.int64)
        for p in (pos[a], pos[b], 0.5 * (pos[a] + pos[b]), pos[a] + rng.normal(scale=0.05, size=3)):
            strict = _faces_ok(pos, m.faces, fa, fa.size, a, b, p) and \
                _faces_ok(pos, m.faces, fb, fb.size, a, b, p)
            assert guards_ok(pos, m.faces, fa, fb, a, b, p, QEM_POINT_ONLY[0], lists) == strict


def test_fold_guard_stops_a_face_turning_over_in_steps():
    # F = (a, w1, w2) hinged on edge w1-w2 of the flat face G; a on a unit circle about that edge: at angle
    # t the normals of F and G are t apart. Each step below turns F by 20-40 degrees (within the 60-degree
    # turn limit); the fold guard refuses to bring F past 120 degrees from G, or further once past.
    def hinge(deg):
        t = np.radians(deg)
        return [0.5, np.cos(t), np.sin(t)]

    pos = np.array([hinge(100), [0, 0, 0], [1, 0, 0], [0.5, -1, 0], [9, 9, 9]], np.float64)
    faces = np.array([[0, 1, 2], [2, 1, 3]], np.int32)
    fa, fb, lists = np.array([0], np.int64), np.empty(0, np.int64), corner_lists(faces, 5)
    strict = GUARD_LEVELS[0]
    assert guards_ok(pos, faces, fa, fb, 0, 4, hinge(60), strict, lists)         # opens: fine
    assert not guards_ok(pos, faces, fa, fb, 0, 4, hinge(140), strict, lists)    # 100 -> 140: a new fold
    assert guards_ok(pos, faces, fa, fb, 0, 4, hinge(140), GUARD_LEVELS[1], lists)   # relaxed: allowed
    assert guards_ok(pos, faces, fa, fb, 0, 4, hinge(140), QEM_POINT_ONLY[0], lists)  # the rule before
    pos[0] = hinge(150)                                                           # a crease the input has
    assert guards_ok(pos, faces, fa, fb, 0, 4, hinge(130), strict, lists)        # may open
    assert not guards_ok(pos, faces, fa, fb, 0, 4, hinge(170), strict, lists)    # may not close further


def test_marching_cubes_mesh_that_stalled_reaches_its_budget(shared_dir):
    m = marching_cubes_bob(64)                                        # 16372 faces, genus 1
    pos, faces = m.vertices.astype(np.float64), m.faces.copy()
    alive, level = _simplify_kernel(pos, faces, fixed_vertices(faces, m.num_vertices), 100, 100, 1,
                                    QEM_POINT_ONLY)
    assert level == -1 and alive.sum() > 150                         # the rule before stalled (at 190)
    out, rep = simplify_qem(m, 100)
    assert out.num_faces in (99, 100) and rep.faces_out == out.num_faces and rep.reached
    assert_manifold_oriented(out)
    assert euler(out) == euler(m) == 0                                # still one closed torus


@pytest.mark.parametrize("name,budgets", [("bob", (4, 20, 300)), ("spot", (4, 20, 300)),
                                          ("fox", (4, 300, 1000)), ("duck", (4, 20, 300)),
                                          ("bunny", (50, 300))])
def test_budget_never_exceeded_on_assets(shared_dir, name, budgets):
    mesh = load_mesh(asset_path(name))
    for budget in budgets:
        try:
            out, rep = simplify_qem(mesh, budget)
        except ConfigError as err:
            need = suggested(err)
            clean = clean_mesh(mesh)
            assert budget < need <= clean.num_faces
            assert need >= face_floor(clean.faces, clean.num_vertices).faces
            out, rep = simplify_qem(mesh, need)                        # the suggested budget is reachable
            budget = need
        assert out.num_faces <= budget and rep.faces_out == out.num_faces
        if rep.faces_out < budget - 1:
            assert "within the budget" in rep.reason                    # a short result says why
        assert_manifold_oriented(out)


def test_impossible_budget_names_the_shape_and_the_fix(shared_dir):
    with pytest.raises(ConfigError) as err:
        simplify_qem(TriMesh(*torus()), 4)
    msg = str(err.value)
    assert "\n" not in msg and "genus 1" in msg and ">= 14" in msg and suggested(err.value) >= 14
    out, _ = simplify_qem(TriMesh(*torus()), suggested(err.value))
    assert out.num_faces <= suggested(err.value) and euler(out) == 0
    with pytest.raises(ConfigError, match="genus 1") as err:
        simplify_qem(load_mesh(asset_path("bob")), 4)
    assert suggested(err.value) >= 14


def test_cli_refuses_an_impossible_budget_before_writing(shared_dir, tmp_path, capsys):
    from engine.cli import main

    out = tmp_path / "bob.glb"
    code = main(["process", str(asset_path("bob")), "-o", str(out), "--faces", "4"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "genus 1" in lines[0], err
    assert not out.exists() and "Traceback" not in err
    need = int(re.search(r"use --faces (\d+) or more", lines[0]).group(1))
    assert 14 <= need <= 30


def test_gpu_table_beside_meshlab_columns_marks_each_worse_row(tmp_path):
    from benchmarks.simplify_budget import compare

    def table(rows):
        head = "| " + " | ".join(["Asset", "Dense", "Target"] + ["x"] * 15) + " |"
        return head + "\n" + "".join("| " + " | ".join(map(str, r)) + " |  |\n" for r in rows)

    gpu, cpu = tmp_path / "gpu.md", tmp_path / "cpu.md"
    gpu.write_text(table([["a", 10, 5000] + ["-"] * 5 + [5000, 10.0, 1.0, 0, 0.1] + ["-"] * 5,
                          ["a", 10, 10000] + ["-"] * 5 + [10000, 9.0, 3.0, 0, 0.1] + ["-"] * 5]))
    cpu.write_text(table([["a", 10, 5000] + [1] * 10 + [5000, 12.0, 1.5, 0, 1],
                          ["a", 10, 10000] + [1] * 10 + [10000, 9.5, 2.0, 0, 1]]))
    text = compare(gpu, cpu)
    assert "| a | 5000 | 5000 | 10.0 | 1.0 | 0 | 5000 | 12.0 | 1.5 | 0 | yes |" in text
    assert "| a | 10000 | 10000 | 9.0 | 3.0 | 0 | 10000 | 9.5 | 2.0 | 0 | **no** |" in text   # Hausdorff
    assert "Rows no worse than MeshLab: 1 of 2." in text
