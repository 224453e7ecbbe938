"""What the QEM simplifier may move, and the fewest faces it can ever reach (engine.geometry.simplify).

Fixed vertices (``fixed_vertices``): endpoints of boundary edges (1 face), non-manifold edges (> 2 faces)
and inconsistently oriented edges (both faces walk the edge the same way), and bow-tie vertices (faces
forming more than one edge-connected fan). They never move, so boundary loops stay exactly as given.

Face floor (``face_floor``). Edge collapses that keep the link condition preserve each part's topology
(Euler characteristic chi = V - E + F, boundary loops) and never merge or delete a part, so a lower bound
on the faces any valid collapse sequence can reach is the sum over edge-connected parts of:
  * closed, manifold, consistently oriented part of genus g = (2 - chi) / 2: the smallest triangulation
    of that surface, 4 faces for a sphere (tetrahedron) and F = 2 V_min + 4 g - 4 otherwise, with
    V_min = ceil((7 + sqrt(1 + 48 g)) / 2) vertices (Heawood's bound, attained for every g except g = 2,
    which needs 10: Jungerman & Ringel 1980). Torus: 7 vertices, 14 faces (Csaszar's torus);
  * manifold part with boundary: its B_v boundary vertices are fixed, so V >= B_v and
    F = 2 V - B_e - 2 chi >= 2 B_v - B_e - 2 chi (B_e boundary edges): a disk bounded by B edges keeps at
    least B - 2 faces;
  * any other part (non-manifold edges, inconsistent winding): 1 (no useful bound; the simplifier's own
    stall is then the only evidence).
The bound can be unattainable (edge collapse cannot always reach a minimal triangulation, and the
simplifier's guards refuse collapses that would fold the surface); it is exact for the tetrahedron.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit


@njit(cache=True)
def _nonmanifold_fans(faces, nv):
    """bool [V]: vertices whose faces form more than one edge-connected fan (bow-ties)."""
    deg = np.zeros(nv + 1, dtype=np.int64)
    for f in range(faces.shape[0]):
        for k in range(3):
            deg[faces[f, k] + 1] += 1
    start = np.cumsum(deg)
    fill = start[:-1].copy()
    vf = np.empty(3 * faces.shape[0], dtype=np.int64)
    for f in range(faces.shape[0]):
        for k in range(3):
            v = faces[f, k]
            vf[fill[v]] = f
            fill[v] += 1
    bad = np.zeros(nv, dtype=np.bool_)
    seen = np.zeros(faces.shape[0], dtype=np.bool_)
    for v in range(nv):
        lo, hi = start[v], start[v + 1]
        if hi - lo < 2:
            continue
        seen[vf[lo]] = True
        reached, changed = 1, True
        while changed:
            changed = False
            for i in range(lo, hi):
                g = vf[i]
                if seen[g]:
                    continue
                for j in range(lo, hi):
                    h = vf[j]
                    if not seen[h]:
                        continue
                    shared = 0
                    for k in range(3):
                        w = faces[g, k]
                        if w != v and (faces[h, 0] == w or faces[h, 1] == w or faces[h, 2] == w):
                            shared += 1
                    if shared > 0:
                        seen[g] = True
                        reached += 1
                        changed = True
                        break
        bad[v] = reached != hi - lo
        for i in range(lo, hi):
            seen[vf[i]] = False
    return bad


def _edge_table(faces: np.ndarray, num_vertices: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(directed edges int64 [3F, 2], undirected key id per directed edge [3F], faces per key, forward
    traversals per key)."""
    f = np.asarray(faces, dtype=np.int64)
    d = np.stack([f, np.roll(f, -1, axis=1)], axis=2).reshape(-1, 2)   # [3F, 2] directed edges
    lo, hi = d.min(axis=1), d.max(axis=1)
    _, inv, counts = np.unique(lo * num_vertices + hi, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    forward = np.bincount(inv, weights=(d[:, 0] < d[:, 1]), minlength=counts.size)
    return d, inv, counts, forward


def fixed_vertices(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """bool [V]: vertices that must not move (see the module docstring)."""
    d, inv, counts, forward = _edge_table(faces, num_vertices)
    bad_edge = ((counts != 2) | (forward != 1))[inv]                      # [3F] per directed edge
    fixed = np.zeros(num_vertices, dtype=bool)
    fixed[d[bad_edge, 0]] = True
    fixed[d[bad_edge, 1]] = True
    return fixed | _nonmanifold_fans(np.asarray(faces, dtype=np.int32), num_vertices)


def min_vertices_of_genus(genus: int) -> int:
    """Fewest vertices of a triangulated closed orientable surface of this genus (Jungerman-Ringel)."""
    if genus == 0:
        return 4
    if genus == 2:
        return 10
    return math.ceil((7 + math.sqrt(1 + 48 * genus)) / 2)


@dataclass(frozen=True)
class FaceFloor:
    """Lower bound on reachable faces, and the shape facts behind it (for the error message)."""

    faces: int
    parts: int
    closed_genus: tuple[int, ...]     # genus of each closed manifold part
    boundary_edges: int               # fixed boundary edges over the parts with boundary
    irregular_parts: int              # non-manifold or inconsistently wound parts (bound 1 each)

    def describe(self) -> str:
        bits = [f"{self.parts} part{'s' if self.parts != 1 else ''}"]
        genus = [g for g in self.closed_genus if g > 0]
        if genus:
            bits.append("closed part genus " + ", ".join(str(g) for g in genus))
        if self.boundary_edges:
            bits.append(f"{self.boundary_edges} boundary edges kept fixed")
        if self.irregular_parts:
            bits.append(f"{self.irregular_parts} non-manifold part{'s' if self.irregular_parts != 1 else ''}")
        return ", ".join(bits)


def face_components(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """int64 [F]: part label of each face (faces sharing a vertex are in one part)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = np.asarray(faces, dtype=np.int64)
    n_f = f.shape[0]
    rows = np.repeat(np.arange(n_f), 3)                                  # face node -> vertex node
    graph = coo_matrix((np.ones(rows.size), (rows, f.reshape(-1) + n_f)), shape=(n_f + num_vertices,) * 2)
    _, labels = connected_components(graph, directed=False)
    _, part = np.unique(labels[:n_f], return_inverse=True)               # dense ids over faces only
    return part.reshape(-1).astype(np.int64)


def face_floor(faces: np.ndarray, num_vertices: int) -> FaceFloor:
    """The fewest faces edge collapse can reach on this mesh (a lower bound; see the module docstring).
    faces int [F, 3] (welded, no degenerate faces: ``clean_mesh`` output)."""
    f = np.asarray(faces, dtype=np.int64)
    label = face_components(f, num_vertices)
    n_parts = int(label.max()) + 1 if f.size else 0
    d, inv, counts, forward = _edge_table(f, num_vertices)
    edge_part = np.zeros(counts.size, np.int64)
    edge_part[inv] = np.repeat(label, 3)
    vert_part = np.full(num_vertices, -1, np.int64)
    vert_part[f.reshape(-1)] = np.repeat(label, 3)
    n_faces = np.bincount(label, minlength=n_parts)
    n_edges = np.bincount(edge_part, minlength=n_parts)
    n_verts = np.bincount(vert_part[vert_part >= 0], minlength=n_parts)
    boundary = counts == 1
    irregular = (counts > 2) | ((counts == 2) & (forward != 1))
    b_edges = np.bincount(edge_part[boundary], minlength=n_parts)
    bad = np.bincount(edge_part[irregular], minlength=n_parts) > 0
    bverts = np.zeros(num_vertices, bool)
    bverts[d[boundary[inv], 0]] = True
    b_verts = np.bincount(vert_part[bverts], minlength=n_parts)
    total, genus, fixed_edges = 0, [], 0
    for p in range(n_parts):
        chi = int(n_verts[p] - n_edges[p] + n_faces[p])
        if bad[p]:
            total += 1
        elif b_edges[p] == 0:
            g = max(0, (2 - chi) // 2)
            genus.append(g)
            total += 4 if g == 0 else 2 * min_vertices_of_genus(g) + 4 * g - 4
        else:
            fixed_edges += int(b_edges[p])
            total += max(1, int(2 * b_verts[p] - b_edges[p] - 2 * chi))
    return FaceFloor(total, n_parts, tuple(genus), fixed_edges, int(bad.sum()))
