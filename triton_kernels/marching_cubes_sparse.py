"""Narrow-band (sparse) marching cubes over active bricks: the same mesh as dense MC, bricks only.

Maths and layout
----------------
Lattice of ``n`` nodes per axis (``m = n - 1`` cells), indexed ``[x, y, z]`` as ``triton_kernels.
marching_cubes``. A brick of size ``b`` with brick coordinate ``(X, Y, Z)`` owns the cells
``[X b, X b + b) x [Y b, Y b + b) x [Z b, Z b + b)`` (cells past ``m - 1`` are ignored) and carries the
``(b + 1)^3`` node values that those cells read: ``values[B, b + 1, b + 1, b + 1]``, node ``(i, j, k)`` of
brick ``(X, Y, Z)`` is lattice node ``(X b + i, Y b + j, Z b + k)`` (values past ``n - 1`` are ignored).
Nodes shared by neighbouring bricks must carry the same value (they are samples of one field).

Contract: if every cell outside the bricks has no crossing (case 0 or 255), the output equals
``marching_cubes_ref`` on the dense field (the shared reference): vertex ``k`` = ``k``-th crossed lattice
edge in global edge-id order (same ids as the dense kernel), faces cell by cell in global C order,
triangles in table order. Bricks must be distinct.

Steps: (1) Triton, one lane per brick cell: case index and triangle count (0 outside the lattice);
(2) torch: active cells (nonzero), sorted by global cell id (CUB radix sort); triangles expanded by
``repeat_interleave``; local table edges -> global edge ids and interpolated positions (read from the
brick's own nodes); (3) ``torch.unique`` of the global edge ids gives the welded vertex ids (edges on
shared brick faces deduplicated) and the vertex order of the dense kernel.
Host syncs: three (active cell count, triangle count, unique vertex count).
Memory: 8 B per brick cell for case/count plus ~60 B per output triangle; no ``n^3`` buffer. Bytes floor:
the brick values are read once by the case pass (4 (b + 1)^3 B per brick).

Dense entry points: ``crossing_bricks`` (bool brick mask of a dense field, max-pool of the inside/outside
flags), ``marching_cubes_bricks`` (dense field + brick mask, e.g. from a hierarchical decoder) and
``marching_cubes_dense_bricks`` (both: the narrow band of a dense SDF).
"""

from __future__ import annotations

import numpy as np
import torch

from triton_kernels.marching_cubes import (
    EDGE_AXIS,
    EDGE_CORNERS,
    MC_COUNTS,
    MC_TRIANGLES,
    marching_cubes_ref,
    triton,
)

__all__ = ["marching_cubes_ref", "marching_cubes_sparse", "marching_cubes_bricks", "crossing_bricks",
           "marching_cubes_dense_bricks"]

_CORNER_OFFSETS = np.array([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=np.int64)

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _brick_cells_kernel(values_ptr, bricks_ptr, count_table_ptr, case_ptr, count_ptr, level, n,
                            num_lanes, B: tl.constexpr, BLOCK: tl.constexpr):
        # One lane per (brick, local cell): case index and triangle count (0 for cells past the lattice).
        lane = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        inb = lane < num_lanes
        brick = lane // (B * B * B)
        local = lane % (B * B * B)
        lx = local // (B * B)
        ly = (local // B) % B
        lz = local % B
        gx = tl.load(bricks_ptr + brick * 3, mask=inb, other=0).to(tl.int64) * B + lx
        gy = tl.load(bricks_ptr + brick * 3 + 1, mask=inb, other=0).to(tl.int64) * B + ly
        gz = tl.load(bricks_ptr + brick * 3 + 2, mask=inb, other=0).to(tl.int64) * B + lz
        valid = inb & (gx < n - 1) & (gy < n - 1) & (gz < n - 1)
        s = B + 1
        base = brick * s * s * s + (lx * s + ly) * s + lz
        case = tl.zeros([BLOCK], dtype=tl.int32)
        for c in tl.static_range(8):
            off = (c & 1) * s * s + ((c >> 1) & 1) * s + ((c >> 2) & 1)
            v = tl.load(values_ptr + base + off, mask=valid, other=0.0)
            case = case | ((v < level).to(tl.int32) << c)
        count = tl.load(count_table_ptr + case, mask=valid, other=0)
        count = tl.where(valid, count, 0)
        tl.store(case_ptr + lane, case, mask=inb)
        tl.store(count_ptr + lane, count, mask=inb)


_BLOCK = 256


def _check_sparse(bricks: torch.Tensor, values: torch.Tensor, n: int) -> int:
    if not isinstance(bricks, torch.Tensor) or not isinstance(values, torch.Tensor):
        raise TypeError("bricks and values must be torch tensors")
    if bricks.dtype != torch.int32 or bricks.dim() != 2 or bricks.shape[1] != 3:
        raise ValueError(f"bricks must be int32 [B, 3], got {bricks.dtype} {tuple(bricks.shape)}")
    if values.dtype != torch.float32 or values.dim() != 4 or len(set(values.shape[1:])) != 1:
        raise ValueError(f"values must be float32 [B, b+1, b+1, b+1], got {values.dtype} "
                         f"{tuple(values.shape)}")
    if values.shape[0] != bricks.shape[0] or values.shape[1] < 2:
        raise ValueError(f"values {tuple(values.shape)} do not match bricks {tuple(bricks.shape)} (b >= 1)")
    if values.device != bricks.device:
        raise ValueError(f"bricks on {bricks.device} but values on {values.device}")
    if n < 2:
        raise ValueError(f"lattice needs n >= 2 nodes per axis, got {n}")
    return int(values.shape[1]) - 1


def marching_cubes_sparse(bricks: torch.Tensor, values: torch.Tensor, n: int, level: float = 0.0):
    """Marching cubes of the active bricks of an ``n``-node lattice (see the module docstring).

    bricks: int32 [B, 3] distinct brick coordinates; values: float32 [B, b+1, b+1, b+1] node values (same
    device; CPU tensors need TRITON_INTERPRET=1). Returns (verts float32 [V, 3] index units, faces int32
    [F, 3]) on that device, equal to ``marching_cubes_ref`` of the dense field when no cell outside the
    bricks has a crossing.
    """
    if triton is None:
        from triton_kernels.errors import MissingDependencyError
        raise MissingDependencyError("triton", "gpu")
    b = _check_sparse(bricks, values, n)
    dev = values.device
    values, bricks = values.contiguous(), bricks.contiguous()
    lanes = int(bricks.shape[0]) * b ** 3
    case = torch.empty(lanes, dtype=torch.int32, device=dev)
    count = torch.empty(lanes, dtype=torch.int32, device=dev)
    count_table = torch.as_tensor(MC_COUNTS, dtype=torch.int32, device=dev)
    if lanes:
        _brick_cells_kernel[(triton.cdiv(lanes, _BLOCK),)](values, bricks, count_table, case, count,
                                                           float(level), n, lanes, B=b, BLOCK=_BLOCK)
    active = torch.nonzero(count).reshape(-1)                      # host sync 1, [A] lane ids
    brick = active // b ** 3
    local = active % b ** 3
    lxyz = torch.stack([local // (b * b), (local // b) % b, local % b], dim=1)          # [A, 3]
    gxyz = bricks[brick].to(torch.int64) * b + lxyz                                     # [A, 3]
    m = n - 1
    order = torch.argsort((gxyz[:, 0] * m + gxyz[:, 1]) * m + gxyz[:, 2])               # global C order
    active, brick, lxyz, gxyz = active[order], brick[order], lxyz[order], gxyz[order]
    cnt = count[active]
    tri_cell = torch.repeat_interleave(torch.arange(active.numel(), device=dev), cnt)  # host sync 2, [F]
    if tri_cell.numel() == 0:
        empty = torch.zeros((0, 3), dtype=torch.float32, device=dev)
        return empty, empty.to(torch.int32)
    first = torch.cumsum(cnt, 0) - cnt
    slot = torch.arange(tri_cell.numel(), device=dev) - first[tri_cell]
    table = torch.as_tensor(MC_TRIANGLES.astype(np.int64), device=dev)                  # [256, 16]
    col = 3 * slot[:, None] + torch.arange(3, device=dev)                               # [F, 3]
    edge = table[case[active[tri_cell]].long()[:, None], col].reshape(-1)              # [3F] local edges
    cell = tri_cell.repeat_interleave(3)                                                # [3F]
    corners = torch.as_tensor(EDGE_CORNERS, device=dev)[edge]                           # [3F, 2]
    offsets = torch.as_tensor(_CORNER_OFFSETS, device=dev)
    lo_local = lxyz[cell] + offsets[corners[:, 0]]                                      # [3F, 3]
    hi_local = lxyz[cell] + offsets[corners[:, 1]]
    axis = torch.as_tensor(EDGE_AXIS, device=dev)[edge]                                 # [3F]
    p0 = gxyz[cell] + offsets[corners[:, 0]]                                            # global low node
    gid = _global_edge_id(p0, axis, n)
    used, inverse = torch.unique(gid, return_inverse=True)                              # host sync 3
    s = b + 1
    flat = values.reshape(-1)
    bb = brick[cell] * s ** 3
    v0 = flat[bb + (lo_local[:, 0] * s + lo_local[:, 1]) * s + lo_local[:, 2]]
    v1 = flat[bb + (hi_local[:, 0] * s + hi_local[:, 1]) * s + hi_local[:, 2]]
    t = (level - v0) / (v1 - v0)
    pos = p0.to(torch.float32)
    pos[torch.arange(pos.shape[0], device=dev), axis] += t
    verts = torch.empty((used.numel(), 3), dtype=torch.float32, device=dev)
    verts[inverse] = pos                                           # duplicates write identical values
    return verts, inverse.reshape(-1, 3).to(torch.int32)


def _global_edge_id(p0: torch.Tensor, axis: torch.Tensor, n: int) -> torch.Tensor:
    """int64 [K] global edge ids (x-, y-, z-edge blocks, as the dense kernel) of the edges starting at
    lattice node p0 int64 [K, 3] along ``axis`` [K]."""
    block = n * n * (n - 1)
    x, y, z = p0[:, 0], p0[:, 1], p0[:, 2]
    gx = (x * n + y) * n + z
    gy = block + (x * (n - 1) + y) * n + z
    gz = 2 * block + (x * n + y) * (n - 1) + z
    return torch.where(axis == 0, gx, torch.where(axis == 1, gy, gz))


def _padded(values: torch.Tensor, brick: int) -> tuple[torch.Tensor, int]:
    """(field padded by edge replication to nb * brick + 1 nodes per axis, nb)."""
    n = int(values.shape[0])
    nb = max(1, -(-(n - 1) // brick))
    pad = nb * brick + 1 - n
    if pad == 0:
        return values, nb
    p = torch.nn.functional.pad(values[None, None], (0, pad, 0, pad, 0, pad), mode="replicate")
    return p[0, 0], nb


def crossing_bricks(values: torch.Tensor, brick: int = 8, level: float = 0.0) -> torch.Tensor:
    """bool [nb, nb, nb] mask of the bricks holding both an inside (< level) and an outside node.
    values: float32 [n, n, n]; nb = ceil((n - 1) / brick)."""
    padded, _ = _padded(values, brick)
    inside = (padded < level).to(torch.float32)[None, None]
    pool = torch.nn.functional.max_pool3d
    has_in = pool(inside, brick + 1, stride=brick)[0, 0] > 0
    has_out = pool(1.0 - inside, brick + 1, stride=brick)[0, 0] > 0
    return has_in & has_out


def marching_cubes_bricks(values: torch.Tensor, brick_mask: torch.Tensor, brick: int = 8, level: float = 0.0):
    """Sparse MC of a dense field restricted to the bricks of ``brick_mask``.

    values: float32 [n, n, n]; brick_mask: bool or integer [nb, nb, nb] (nonzero = active), nb =
    ceil((n - 1) / brick), same device. Returns (verts float32 [V, 3] index units, faces int32 [F, 3]).
    """
    if values.dim() != 3 or len(set(values.shape)) != 1 or values.dtype != torch.float32:
        raise ValueError(f"values must be a cubic float32 [n, n, n] grid, got {values.dtype} "
                         f"{tuple(values.shape)}")
    n = int(values.shape[0])
    padded, nb = _padded(values.contiguous(), brick)
    if tuple(brick_mask.shape) != (nb, nb, nb):
        raise ValueError(f"brick mask must be [{nb}, {nb}, {nb}] for n={n}, brick={brick}, "
                         f"got {tuple(brick_mask.shape)}")
    bricks = torch.nonzero(brick_mask).to(torch.int32)             # [B, 3]
    s = brick + 1
    r = torch.arange(s, device=values.device)
    local = ((r[:, None, None] * padded.shape[0] + r[None, :, None]) * padded.shape[0] + r[None, None, :])
    base = ((bricks[:, 0].long() * brick * padded.shape[0] + bricks[:, 1].long() * brick) * padded.shape[0]
            + bricks[:, 2].long() * brick)
    brick_values = padded.reshape(-1)[base[:, None, None, None] + local[None]]        # [B, s, s, s]
    return marching_cubes_sparse(bricks, brick_values.contiguous(), n, level)


def marching_cubes_dense_bricks(values: torch.Tensor, level: float = 0.0, brick: int = 8):
    """Narrow-band MC of a dense field: only the bricks with a crossing are meshed. Same output as
    ``marching_cubes_ref``/``marching_cubes_triton`` on ``values`` (float32 [n, n, n])."""
    return marching_cubes_bricks(values, crossing_bricks(values, brick, level), brick, level)
