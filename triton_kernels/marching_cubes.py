"""Marching cubes: a generated case table, a vectorised numpy reference and a two-pass Triton kernel.

Maths and layout
----------------
Input: a scalar field ``values`` float32 ``[n, n, n]`` indexed ``[x, y, z]`` on an integer lattice (index
units). A node is INSIDE when ``value < level`` (SDF convention: negative inside). A cell ``(x, y, z)``,
``0 <= x, y, z < n - 1``, has corners ``c = dx + 2 dy + 4 dz`` and case index ``sum(inside[c] << c)``.

Cube edges (local, 12): ``e = 4 * axis + b0 + 2 * b1`` where ``axis`` is the edge direction (0 = x,
1 = y, 2 = z) and ``(b0, b1)`` are the offsets along the two other axes in increasing axis order.

Global edges: one vertex per crossed lattice edge, so the output is welded by construction. Edge ids are
the concatenation of three C-ordered blocks: x-edges ``[n-1, n, n]``, then y-edges ``[n, n-1, n]``, then
z-edges ``[n, n, n-1]`` (``3 n^2 (n-1)`` ids). Vertex ``k`` is the ``k``-th crossed edge in id order; its
position is the linear interpolation ``p0 + t (p1 - p0)``, ``t = (level - v0) / (v1 - v0)``, in index
units. Faces are emitted cell by cell in C order, triangles in table order; both backends produce the
same vertex and face arrays.

Table generation rule (no published table is copied)
----------------------------------------------------
For each of the 256 cases and each cube face, the face's sign changes give 0, 2 or 4 crossing points
on its edges. Two crossings are joined by one segment. Four crossings (an ambiguous face: diagonal
corners share a sign) are joined so that the INSIDE corners are separated (each inside corner is cut
off by its own segment). The rule reads only the four corner signs of that face, so the two cells that
share a face always draw the same segments there: the surface is crack-free. Each segment is oriented
so that, seen from outside the cube, the inside side lies on its right-hand side in the face's frame
(``dot(cross(d, q - p), n_face) < 0`` with ``d`` pointing from the inside side to the outside side).
Every crossing point then has one incoming and one outgoing segment, so segments chain into closed
loops; each loop ``v0 .. vk`` is fan-triangulated ``(v0, vi, vi+1)``, with the apex rotated so that no
inner diagonal joins two crossings of the same cube face (such a diagonal would lie in the face and be
shared with the neighbouring cell: a non-manifold edge); a recursive search covers loops where no fan
works. Triangle normals ``cross(b - a, c - a)`` point from the inside (negative) to the outside
(positive), i.e. they are counter-clockwise seen from outside (glTF front faces). The generated table
has at most 5 triangles per case; it is stored as ``MC_TRIANGLES`` int8 ``[256, 16]`` (-1 padded)
and ``MC_COUNTS`` int32 ``[256]``. For cases without an ambiguous face the complementary case
(``255 - c``) has the same loops reversed; on ambiguous faces the rule is deliberately not
complement-symmetric (that asymmetry is what keeps neighbouring cells consistent).

Limits and cost floor
---------------------
The Triton launcher needs ``n >= 2``; ids are int64 inside the kernels so n up to 1025 is addressable.
Device memory: values (4 n^3 B) + per-cell case and count (int32, 8 n^3 B) + edge flags and vertex ids
(int32, 24 n^3 B) + outputs: about 36 n^3 bytes (4.9 GB at n = 513). Bytes moved: the field is read
about 11 times (cases, edge flags, positions, pass 2 gathers), so the floor is ~44 n^3 B of traffic.
Host syncs: exactly two scalar reads (total triangle and vertex counts).
"""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------------------------------------
# Case table generation.
# --------------------------------------------------------------------------------------------------------

_CORNERS = np.array([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=np.int64)  # [8, 3]


def _edge_corners() -> np.ndarray:
    """Local edge -> (corner at the low end, corner at the high end), int64 [12, 2]."""
    out = np.zeros((12, 2), dtype=np.int64)
    for e in range(12):
        axis, b0, b1 = e // 4, e & 1, (e >> 1) & 1
        others = [a for a in range(3) if a != axis]
        lo = [0, 0, 0]
        lo[others[0]], lo[others[1]] = b0, b1
        hi = list(lo)
        hi[axis] = 1
        out[e] = (lo[0] + 2 * lo[1] + 4 * lo[2], hi[0] + 2 * hi[1] + 4 * hi[2])
    return out


EDGE_CORNERS = _edge_corners()
EDGE_AXIS = np.arange(12) // 4                        # [12] edge direction
EDGE_B0 = np.arange(12) & 1                           # [12] offset on the first other axis
EDGE_B1 = (np.arange(12) >> 1) & 1                    # [12] offset on the second other axis


def _faces() -> list[tuple[np.ndarray, list[int], list[int]]]:
    """The 6 cube faces: (outward normal [3], corners in cyclic order, edges in the same cyclic order)."""
    faces = []
    for axis in range(3):
        for side in (0, 1):
            u, v = [a for a in range(3) if a != axis]
            ring = []
            for du, dv in ((0, 0), (1, 0), (1, 1), (0, 1)):
                p = [0, 0, 0]
                p[axis], p[u], p[v] = side, du, dv
                ring.append(p[0] + 2 * p[1] + 4 * p[2])
            edges = []
            for i in range(4):
                a, b = ring[i], ring[(i + 1) % 4]
                edges.append(next(e for e in range(12) if set(EDGE_CORNERS[e]) == {a, b}))
            normal = np.zeros(3)
            normal[axis] = 1.0 if side else -1.0
            faces.append((normal, ring, edges))
    return faces


def _face_segments(case: int, normal: np.ndarray, ring: list[int], edges: list[int]) -> list[tuple[int, int]]:
    """Oriented segments (edge_from, edge_to) on one face for one case (see the module docstring)."""
    inside = [(case >> c) & 1 for c in ring]
    crossed = [i for i in range(4) if inside[i] != inside[(i + 1) % 4]]
    if not crossed:
        return []
    pairs: list[tuple[int, int]] = []
    if len(crossed) == 2:
        pairs.append((crossed[0], crossed[1]))
    else:  # ambiguous face: cut off each inside corner; ring edge i joins ring corners i and i + 1
        for k in range(4):
            if inside[k]:
                pairs.append(((k - 1) % 4, k))
    mid = {i: 0.5 * (_CORNERS[ring[i]] + _CORNERS[ring[(i + 1) % 4]]) for i in range(4)}
    segments = []
    for i, j in pairs:
        p, q = mid[i], mid[j]
        if (j - i) % 4 in (1, 3):  # adjacent ring edges: they share one corner, which the segment cuts off
            k = j if (j - i) % 4 == 1 else i
            sign = 1.0 if inside[k] else -1.0
            d = sign * (0.5 * (p + q) - _CORNERS[ring[k]])
        else:                      # opposite ring edges: the segment splits the face in two halves
            cin = np.mean([_CORNERS[ring[m]] for m in range(4) if inside[m]], axis=0)
            cout = np.mean([_CORNERS[ring[m]] for m in range(4) if not inside[m]], axis=0)
            d = cout - cin
        if np.dot(np.cross(d, q - p), normal) > 0:
            i, j = j, i
        segments.append((edges[i], edges[j]))
    return segments


def _case_loops(case: int) -> list[list[int]]:
    """Closed, oriented loops of local edge ids for one case."""
    nxt: dict[int, int] = {}
    for normal, ring, edges in _FACES:
        for a, b in _face_segments(case, normal, ring, edges):
            assert a not in nxt, "two outgoing segments at one crossing"
            nxt[a] = b
    loops = []
    while nxt:
        start = min(nxt)
        loop = [start]
        cur = nxt.pop(start)
        while cur != start:
            loop.append(cur)
            cur = nxt.pop(cur)
        loops.append(loop)
    return loops


def _share_face(a: int, b: int) -> bool:
    return any(a in edges and b in edges for _, _, edges in _FACES)


def _triangulate(loop: list[int]) -> list[tuple[int, int, int]]:
    """Triangulate one loop without diagonals between two crossings of the same cube face.

    Such a diagonal would lie in the face and coincide with the segment or diagonal of the neighbouring
    cell (a non-manifold edge). The first valid fan (apex rotated through the loop) is used; otherwise a
    recursive search over triangulations (loops have at most 7 crossings with this rule).
    """
    k = len(loop)
    for r in range(k):
        lp = loop[r:] + loop[:r]
        if all(not _share_face(lp[0], lp[i]) for i in range(2, k - 1)):
            return [(lp[0], lp[i], lp[i + 1]) for i in range(1, k - 1)]
    return _triangulate_search(loop)


def _triangulate_search(poly: list[int]) -> list[tuple[int, int, int]]:
    if len(poly) == 3:
        return [(poly[0], poly[1], poly[2])]
    for r in range(len(poly)):
        p = poly[r:] + poly[:r]
        for j in range(2, len(p)):
            if (j != 2 and _share_face(p[1], p[j])) or (j != len(p) - 1 and _share_face(p[0], p[j])):
                continue
            left = _triangulate_search(p[1:j + 1]) if j > 2 else []
            right = _triangulate_search(p[j:] + [p[0]]) if j < len(p) - 1 else []
            if (j > 2 and not left) or (j < len(p) - 1 and not right):
                continue
            return [(p[0], p[1], p[j])] + left + right
    return []


def _build_table() -> tuple[np.ndarray, np.ndarray]:
    table = np.full((256, 16), -1, dtype=np.int8)
    counts = np.zeros(256, dtype=np.int32)
    for case in range(256):
        tris = [t for lp in _case_loops(case) for t in _triangulate(lp)]
        assert all(len(set(t)) == 3 for t in tris), f"case {case} has no face-free triangulation"
        assert len(tris) <= 5, f"case {case} needs {len(tris)} triangles"
        counts[case] = len(tris)
        if tris:
            table[case, : 3 * len(tris)] = np.array(tris, dtype=np.int8).reshape(-1)
    return table, counts


_FACES = _faces()
MC_TRIANGLES, MC_COUNTS = _build_table()   # int8 [256, 16] local edge ids (-1 padded), int32 [256]


def case_loops(case: int) -> list[list[int]]:
    """Public view of the generated loops (local edge ids) of one case, for tests and tooling."""
    return _case_loops(case)


# --------------------------------------------------------------------------------------------------------
# Reference (numpy, vectorised).
# --------------------------------------------------------------------------------------------------------

def _edge_offsets(n: int) -> tuple[int, int, int]:
    """Start id of the x-, y- and z-edge blocks."""
    block = n * n * (n - 1)
    return 0, block, 2 * block


def _cell_cases(inside: np.ndarray) -> np.ndarray:
    """uint8 [n-1, n-1, n-1] case index from the bool [n, n, n] inside flags."""
    m = inside.shape[0] - 1
    case = np.zeros((m, m, m), dtype=np.uint8)
    for c in range(8):
        dx, dy, dz = _CORNERS[c]
        case |= inside[dx:dx + m, dy:dy + m, dz:dz + m].astype(np.uint8) << np.uint8(c)
    return case


def _global_edge_ids(n: int, cx: np.ndarray, cy: np.ndarray, cz: np.ndarray, local: np.ndarray) -> np.ndarray:
    """int64 global edge ids of local edges ``local`` [K] of cells (cx, cy, cz) [K]."""
    ox, oy, oz = _edge_offsets(n)
    axis, b0, b1 = EDGE_AXIS[local], EDGE_B0[local], EDGE_B1[local]
    gid_x = ox + ((cx * n + (cy + b0)) * n + (cz + b1))
    gid_y = oy + (((cx + b0) * (n - 1) + cy) * n + (cz + b1))
    gid_z = oz + (((cx + b0) * n + (cy + b1)) * (n - 1) + cz)
    return np.where(axis == 0, gid_x, np.where(axis == 1, gid_y, gid_z))


def _edge_positions(values: np.ndarray, gid: np.ndarray, level: float) -> np.ndarray:
    """float32 [K, 3] interpolated positions (index units) of crossed global edges ``gid`` [K]."""
    n = values.shape[0]
    ox, oy, oz = _edge_offsets(n)
    axis = np.where(gid >= oz, 2, np.where(gid >= oy, 1, 0))
    local = gid - np.array([ox, oy, oz])[axis]
    shapes = np.array([[n - 1, n, n], [n, n - 1, n], [n, n, n - 1]])[axis]   # [K, 3]
    z = local % shapes[:, 2]
    y = (local // shapes[:, 2]) % shapes[:, 1]
    x = local // (shapes[:, 2] * shapes[:, 1])
    p0 = np.stack([x, y, z], axis=1)
    p1 = p0 + np.eye(3, dtype=np.int64)[axis]
    v0 = values[p0[:, 0], p0[:, 1], p0[:, 2]].astype(np.float32)
    v1 = values[p1[:, 0], p1[:, 1], p1[:, 2]].astype(np.float32)
    t = (np.float32(level) - v0) / (v1 - v0)
    return (p0.astype(np.float32) + t[:, None] * np.eye(3, dtype=np.float32)[axis]).astype(np.float32)


def marching_cubes_ref(values: np.ndarray, level: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Reference marching cubes.

    values: float32 [n, n, n] indexed [x, y, z], finite. Returns (verts float32 [V, 3] in index units,
    faces int64 [F, 3]) with faces counter-clockwise seen from the positive (outside) side.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    n = values.shape[0]
    case = _cell_cases(values < np.float32(level))                  # [m, m, m]
    count = MC_COUNTS[case]
    cells = np.flatnonzero(count)                                    # active cells, C order
    if cells.size == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    cnt = count.reshape(-1)[cells]
    cell_of_tri = np.repeat(cells, cnt)                              # [F]
    first = np.cumsum(cnt) - cnt
    slot = np.arange(cell_of_tri.size) - np.repeat(first, cnt)      # triangle index inside its cell
    cases = case.reshape(-1)[cell_of_tri].astype(np.int64)
    local = MC_TRIANGLES[cases[:, None], 3 * slot[:, None] + np.arange(3)].astype(np.int64)  # [F, 3]
    m = n - 1
    cx, cy, cz = cell_of_tri // (m * m), (cell_of_tri // m) % m, cell_of_tri % m
    gid = _global_edge_ids(n, cx[:, None], cy[:, None], cz[:, None], local)                  # [F, 3]
    used, faces = np.unique(gid.reshape(-1), return_inverse=True)
    verts = _edge_positions(values, used, level)
    return verts, faces.reshape(-1, 3).astype(np.int64)


# --------------------------------------------------------------------------------------------------------
# Triton kernels.
# --------------------------------------------------------------------------------------------------------

try:  # Triton is optional here: the table and the numpy reference do not need it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None

if triton is not None:

    @triton.jit
    def _mc_cells_kernel(values_ptr, count_table_ptr, case_ptr, count_ptr, level, n, num_cells,
                         BLOCK: tl.constexpr):
        # Pass 1: one lane per cell -> case index and triangle count.
        cell = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        mask = cell < num_cells
        m = n - 1
        x = cell // (m * m)
        y = (cell // m) % m
        z = cell % m
        base = (x * n + y) * n + z
        case = tl.zeros([BLOCK], dtype=tl.int32)
        for c in tl.static_range(8):
            off = (c & 1) * n * n + ((c >> 1) & 1) * n + ((c >> 2) & 1)
            v = tl.load(values_ptr + base + off, mask=mask, other=0.0)
            case = case | ((v < level).to(tl.int32) << c)
        count = tl.load(count_table_ptr + case, mask=mask, other=0)
        tl.store(case_ptr + cell, case, mask=mask)
        tl.store(count_ptr + cell, count, mask=mask)

    @triton.jit
    def _decode_edge(gid, n):
        # Global edge id -> (low node linear index, axis) for the three C-ordered edge blocks.
        block = n * n * (n - 1)
        axis = (gid >= block).to(tl.int64) + (gid >= 2 * block).to(tl.int64)
        local = gid - axis * block
        # shape of the block: x: [n-1, n, n], y: [n, n-1, n], z: [n, n, n-1]
        s1 = tl.where(axis == 1, n - 1, n)
        s2 = tl.where(axis == 2, n - 1, n)
        z = local % s2
        y = (local // s2) % s1
        x = local // (s2 * s1)
        node = (x * n + y) * n + z
        return node, axis, x, y, z

    @triton.jit
    def _mc_edge_flags_kernel(values_ptr, flags_ptr, level, n, num_edges, BLOCK: tl.constexpr):
        # One lane per lattice edge: 1 where the edge crosses the level set.
        gid = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        mask = gid < num_edges
        node, axis, x, y, z = _decode_edge(gid, n)
        step = tl.where(axis == 0, n * n, tl.where(axis == 1, n, 1))
        v0 = tl.load(values_ptr + node, mask=mask, other=0.0)
        v1 = tl.load(values_ptr + node + step, mask=mask, other=0.0)
        flag = ((v0 < level) != (v1 < level)).to(tl.int32)
        tl.store(flags_ptr + gid, flag, mask=mask)

    @triton.jit
    def _mc_edge_verts_kernel(values_ptr, flags_ptr, vid_ptr, verts_ptr, level, n, num_edges,
                              BLOCK: tl.constexpr):
        # One lane per lattice edge: crossed edges write their interpolated vertex at vid[edge].
        gid = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        inb = gid < num_edges
        flag = tl.load(flags_ptr + gid, mask=inb, other=0)
        mask = inb & (flag != 0)
        node, axis, x, y, z = _decode_edge(gid, n)
        step = tl.where(axis == 0, n * n, tl.where(axis == 1, n, 1))
        v0 = tl.load(values_ptr + node, mask=mask, other=0.0)
        v1 = tl.load(values_ptr + node + step, mask=mask, other=1.0)
        t = (level - v0) / (v1 - v0)
        px = x.to(tl.float32) + tl.where(axis == 0, t, 0.0)
        py = y.to(tl.float32) + tl.where(axis == 1, t, 0.0)
        pz = z.to(tl.float32) + tl.where(axis == 2, t, 0.0)
        out = tl.load(vid_ptr + gid, mask=mask, other=0).to(tl.int64) * 3
        tl.store(verts_ptr + out, px, mask=mask)
        tl.store(verts_ptr + out + 1, py, mask=mask)
        tl.store(verts_ptr + out + 2, pz, mask=mask)

    @triton.jit
    def _mc_emit_kernel(case_ptr, count_ptr, first_ptr, table_ptr, vid_ptr, faces_ptr, n, num_cells,
                        BLOCK: tl.constexpr):
        # Pass 2: one lane per cell; table entry j of the cell's case becomes faces_flat[3 * first + j],
        # the vertex id of the corresponding global edge.
        cell = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        inb = cell < num_cells
        count = tl.load(count_ptr + cell, mask=inb, other=0)
        case = tl.load(case_ptr + cell, mask=inb, other=0)
        first = tl.load(first_ptr + cell, mask=inb, other=0).to(tl.int64)
        m = n - 1
        x = cell // (m * m)
        y = (cell // m) % m
        z = cell % m
        block = n * n * (n - 1)
        for j in tl.static_range(15):
            mask = inb & (j < 3 * count)
            e = tl.load(table_ptr + case * 16 + j, mask=mask, other=0).to(tl.int64)
            axis = e // 4
            b0 = e & 1
            b1 = (e >> 1) & 1
            gx = (x * n + (y + b0)) * n + (z + b1)
            gy = block + ((x + b0) * (n - 1) + y) * n + (z + b1)
            gz = 2 * block + ((x + b0) * n + (y + b1)) * (n - 1) + z
            gid = tl.where(axis == 0, gx, tl.where(axis == 1, gy, gz))
            v = tl.load(vid_ptr + gid, mask=mask, other=0)
            tl.store(faces_ptr + first * 3 + j, v, mask=mask)



_BLOCK = 256


def marching_cubes_triton(values, level: float = 0.0):
    """Marching cubes on the device holding ``values`` (CPU tensors need TRITON_INTERPRET=1).

    values: torch float32 [n, n, n] indexed [x, y, z], n >= 2, on cpu or cuda, finite.
    Returns (verts torch float32 [V, 3] in index units, faces torch int32 [F, 3]) on the same device,
    identical to ``marching_cubes_ref``. Host syncs: the total vertex and triangle counts only.
    """
    import torch

    if triton is None:
        from triton_kernels.errors import MissingDependencyError
        raise MissingDependencyError("triton", "gpu")
    if not isinstance(values, torch.Tensor):
        raise TypeError("marching_cubes_triton expects a torch.Tensor [n, n, n] float32")
    if values.dim() != 3 or len(set(values.shape)) != 1 or values.shape[0] < 2:
        raise ValueError(f"values must be a cubic [n, n, n] grid with n >= 2, got {tuple(values.shape)}")
    if values.dtype != torch.float32:
        raise ValueError(f"values must be float32, got {values.dtype}")
    dev = values.device
    values = values.contiguous()
    n = int(values.shape[0])
    num_cells = (n - 1) ** 3
    num_edges = 3 * n * n * (n - 1)
    count_table = torch.as_tensor(MC_COUNTS, dtype=torch.int32, device=dev)
    tri_table = torch.as_tensor(MC_TRIANGLES.astype(np.int32), device=dev)
    level = float(level)

    case = torch.empty(num_cells, dtype=torch.int32, device=dev)
    count = torch.empty(num_cells, dtype=torch.int32, device=dev)
    _mc_cells_kernel[(triton.cdiv(num_cells, _BLOCK),)](values, count_table, case, count, level, n,
                                                        num_cells, BLOCK=_BLOCK)
    flags = torch.empty(num_edges, dtype=torch.int32, device=dev)
    _mc_edge_flags_kernel[(triton.cdiv(num_edges, _BLOCK),)](values, flags, level, n, num_edges,
                                                             BLOCK=_BLOCK)

    vid = torch.cumsum(flags, 0, dtype=torch.int32)                 # inclusive; exclusive = vid - flags
    first = torch.cumsum(count, 0, dtype=torch.int32)
    num_verts = int(vid[-1].item())                                  # host sync 1
    num_tris = int(first[-1].item())                                 # host sync 2
    vid -= flags
    first -= count

    verts = torch.empty((num_verts, 3), dtype=torch.float32, device=dev)
    faces = torch.empty((num_tris, 3), dtype=torch.int32, device=dev)
    if num_tris == 0:
        return verts, faces
    edge_grid, cell_grid = (triton.cdiv(num_edges, _BLOCK),), (triton.cdiv(num_cells, _BLOCK),)
    _mc_edge_verts_kernel[edge_grid](values, flags, vid, verts, level, n, num_edges, BLOCK=_BLOCK)
    _mc_emit_kernel[cell_grid](case, count, first, tri_table, vid, faces, n, num_cells, BLOCK=_BLOCK)
    return verts, faces
