"""Watertight conversion by voxel flood fill (paper section 5.1), robust to holes, slits and bad orientation.

Pipeline on the lattice nodes of a ``resolution^3``-cell grid spanning ``[-BOUNDS, BOUNDS]^3`` (the mesh is
first normalised into it; ``WatertightResult`` keeps the transform):

1. Exact unsigned distance ``udf`` (numba: per triangle, visit the nodes of its bounding box grown by
   ``band + 2`` voxels, exact point-triangle distance, keep the minimum). Farther nodes get
   ``band + edt(~B)`` (an upper bound from scipy's Euclidean distance transform).
2. Surface band ``B = udf < band``; dilated band ``Bd = edt(~B) <= dilation`` (Euclidean dilation).
3. Flood fill: connected components (6-connectivity) of ``~Bd`` touching the grid boundary are EXTERIOR;
   the other ("dry") components are INTERIOR, except components smaller than ``min_cavity`` voxels
   (cavities created by the dilation) which return to the unknown set with ``Bd``; the largest dry
   component is always kept (at coarse resolutions the body's own interior can be that small).
4. Neighbour-majority relabelling of the unknown nodes, front by front (a node takes the majority label of
   its labelled 6-neighbours; out-of-grid counts as exterior; ties go to exterior). Phase 1 relabels the
   unknown nodes outside the thin band ``B``: exterior and interior fronts meet half-way across sealed
   holes, and the exterior re-enters concavities the dilation had closed. Unknown nodes no front reached
   are enclosed by ``B`` (inside thin parts) and become interior. Phase 2 relabels ``B`` itself, so the
   sign flips mid-band, on the input surface. This two-phase variant of the paper's relabelling keeps
   parts thinner than the dilation (ears, handles) instead of letting the exterior swallow them.
5. SDF = ``-udf`` on interior nodes, ``+udf`` on exterior nodes (world units of the normalised frame).

Open surfaces that enclose nothing (the two-triangle plane, a head with a wide open neck) leave no interior
node; the result is then a thin closed SHELL: ``sdf = udf - band * spacing`` (``mode == "shell"``), i.e.
a slab ``2 * band`` voxels thick around the surface. In solid mode, parts thinner than ~1 voxel and open
sheets that enclose nothing (e.g. the rim around camelhead's open neck) are dropped, and where the exterior
seed sits closer to a wide sealed hole than the interior seed (the bunny's base) the cap is pushed inward
by up to a few voxels.

Defaults: ``band = 0.87`` voxel (sqrt(3)/2, so ``B`` is leak-proof for 6-connected flooding) and
``dilation = ceil(0.15 * resolution)`` voxels, which seals holes up to ~30% of the object's size (the
Stanford bunny's base holes). Memory: ~25 bytes per node (udf, EDT, labels): 3.4 GB at 512^3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from engine.errors import ConfigError
from engine.geometry.marching_cubes import extract_mesh
from engine.geometry.mesh import TriMesh, validate_mesh
from engine.geometry.sdf_grid import SdfGrid
from triton_kernels.closest_point_host import udf_band_host

BOUNDS = 1.01            # grid spans [-BOUNDS, BOUNDS]^3, as ShapeConfig.bounds
DEFAULT_BAND = 0.87      # voxels


@dataclass
class WatertightResult:
    """SDF of a mesh in a normalised frame, and the map back to the mesh's frame.

    grid:   SdfGrid, float32 [n, n, n] numpy, negative inside, spanning [-BOUNDS, BOUNDS]^3.
    center: float64 [3], the mesh's bounding-box centre (mesh units).
    scale:  normalised = (mesh - center) * scale; mesh = normalised / scale + center.
    mode:   "solid" (an interior was found) or "shell" (open surface: thin slab around it).
    stats:  node counts per label and the chosen parameters, for logs and tests.
    """

    grid: SdfGrid
    center: np.ndarray
    scale: float
    mode: str
    stats: dict

    def to_mesh_frame(self, points: np.ndarray) -> np.ndarray:
        """float [..., 3] normalised positions -> float32 positions in the input mesh's frame."""
        return (np.asarray(points, np.float64) / self.scale + self.center).astype(np.float32)


@njit(cache=True)
def _propagate(state, eligible, seeds, n):
    """Front-by-front neighbour-majority labelling (in place).

    state int8 [n^3] flat (+1 exterior, -1 interior, 0 unknown); eligible uint8 [n^3] (nodes allowed to
    receive a label); seeds int64 [K]: eligible unknown nodes with a labelled or out-of-grid neighbour.
    A front node takes the sign of the sum of its labelled neighbours (out-of-grid = +1, ties = +1).
    """
    nn = n * n
    queued = np.zeros(state.size, np.uint8)
    front = seeds.copy()
    for i in range(front.size):
        queued[front[i]] = 1
    new = np.zeros(front.size, np.int8)
    while front.size > 0:
        new = np.zeros(front.size, np.int8)
        for t in range(front.size):
            i = front[t]
            x, y, z = i // nn, (i // n) % n, i % n
            s = 0
            s += state[i - nn] if x > 0 else 1
            s += state[i + nn] if x < n - 1 else 1
            s += state[i - n] if y > 0 else 1
            s += state[i + n] if y < n - 1 else 1
            s += state[i - 1] if z > 0 else 1
            s += state[i + 1] if z < n - 1 else 1
            new[t] = 1 if s >= 0 else -1
        count = 0
        nxt = np.empty(6 * front.size, np.int64)
        for t in range(front.size):
            state[front[t]] = new[t]
        for t in range(front.size):
            i = front[t]
            x, y, z = i // nn, (i // n) % n, i % n
            for j, ok in ((i - nn, x > 0), (i + nn, x < n - 1), (i - n, y > 0), (i + n, y < n - 1),
                          (i - 1, z > 0), (i + 1, z < n - 1)):
                if ok and eligible[j] and state[j] == 0 and queued[j] == 0:
                    queued[j] = 1
                    nxt[count] = j
                    count += 1
        front = nxt[:count].copy()


def _normalise(mesh: TriMesh, resolution: int, band: float) -> tuple[np.ndarray, float, np.ndarray]:
    """(center [3], scale, verts float64 [V, 3] in grid index units). The longest side spans the grid
    minus a margin of ``band + 2`` voxels per side, so the surface band never touches the boundary."""
    lo, hi = mesh.bounds()
    center = 0.5 * (lo.astype(np.float64) + hi.astype(np.float64))
    half = 0.5 * float((hi - lo).max())
    spacing = 2.0 * BOUNDS / resolution
    target = BOUNDS - (band + 2.0) * spacing
    scale = target / half if half > 0 else 1.0
    normalised = (mesh.vertices.astype(np.float64) - center) * scale
    return center, scale, (normalised + BOUNDS) / spacing


def _flood_labels(dilated: np.ndarray, min_cavity: int) -> tuple[np.ndarray, dict]:
    """int8 [n, n, n] state after flood fill: +1 exterior, -1 interior, 0 unknown (band + cavities)."""
    from scipy import ndimage

    free = ~dilated
    comp, num = ndimage.label(free)                                   # 6-connectivity
    border = np.unique(np.concatenate([comp[[0, -1]].ravel(), comp[:, [0, -1]].ravel(),
                                       comp[:, :, [0, -1]].ravel()]))
    sizes = np.bincount(comp.ravel(), minlength=num + 1)
    kind = np.full(num + 1, -1, np.int8)                             # dry = interior by default
    kind[border] = 1
    cavity = (kind == -1) & (sizes < min_cavity)
    dry_sizes = np.where(kind == -1, sizes, 0)
    dry_sizes[0] = 0
    cavity[int(np.argmax(dry_sizes))] = False                        # the largest dry part is never a cavity
    kind[cavity] = 0
    kind[0] = 0                                                       # label 0 = dilated band = unknown
    state = kind[comp]
    stats = {"components": int(num), "cavities_reset": int(cavity[1:].sum()),
             "dry_nodes": int((state == -1).sum())}
    return state, stats


def _seeds(state: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Flat ids of eligible unknown nodes with a labelled (or out-of-grid) 6-neighbour."""
    labelled = np.pad(state != 0, 1, constant_values=True)
    near = np.zeros_like(eligible)
    for axis in range(3):
        for shift in (-1, 1):
            near |= np.roll(labelled, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return np.flatnonzero(eligible & (state == 0) & near).astype(np.int64)


def mesh_to_sdf(mesh: TriMesh, resolution: int = 256, band: float = DEFAULT_BAND,
                dilation: int | None = None, min_cavity: int | None = None) -> WatertightResult:
    """Signed distance grid of a (possibly open, holed, badly oriented) mesh by flood fill.

    mesh: TriMesh (float32 [V, 3] positions, any units; orientation is ignored).
    resolution: cells per axis (grid has resolution + 1 nodes), 8..1024.
    band: surface band half-width in voxels (>= sqrt(3)/2 keeps 6-connected flooding out).
    dilation: band dilation in voxels; None = ceil(0.15 * resolution) (seals holes up to ~30% of the size).
    min_cavity: dry components with fewer nodes are returned to the unknown set; None = (dilation + 1)^3.
    Returns a WatertightResult whose grid spans [-1.01, 1.01]^3 of the normalised frame.
    """
    from scipy import ndimage

    validate_mesh(mesh, "mesh to make watertight")
    if not 8 <= resolution <= 1024:
        raise ConfigError(f"watertight resolution {resolution} out of range", "use a value in [8, 1024]")
    if not band >= 0.5:
        raise ConfigError(f"surface band {band} voxels is too thin to stop the flood fill", "use band >= 0.5")
    dilation = math.ceil(0.15 * resolution) if dilation is None else int(dilation)
    if dilation < 0:
        raise ConfigError(f"dilation {dilation} is negative", "use dilation >= 0 voxels")
    min_cavity = (dilation + 1) ** 3 if min_cavity is None else int(min_cavity)
    n = resolution + 1
    center, scale, verts = _normalise(mesh, resolution, band)

    udf = np.full((n, n, n), np.inf, np.float32)
    udf_band_host(verts, mesh.faces.astype(np.int64), n, float(band) + 2.0, udf)   # index units
    band_mask = udf < band
    far = ndimage.distance_transform_edt(~band_mask).astype(np.float32)              # voxels to B
    dilated = far <= dilation
    udf = np.where(np.isfinite(udf), udf, band + far)

    state, stats = _flood_labels(dilated, min_cavity)
    flat = state.reshape(-1)
    phase1 = (state == 0) & ~band_mask
    _propagate(flat, phase1.reshape(-1).view(np.uint8), _seeds(state, phase1), n)
    flat[(flat == 0) & ~band_mask.reshape(-1)] = -1                  # enclosed by B: inside thin parts
    phase2 = (state == 0) & band_mask
    _propagate(flat, phase2.reshape(-1).view(np.uint8), _seeds(state, phase2), n)
    flat[flat == 0] = 1
    state[[0, -1]] = state[:, [0, -1]] = 1
    state[:, :, [0, -1]] = 1

    spacing = 2.0 * BOUNDS / resolution
    interior = int((state < 0).sum())
    if interior:
        mode, values = "solid", np.where(state < 0, -udf, udf) * spacing
    else:
        mode, values = "shell", (udf - band) * spacing
    stats.update(interior_nodes=interior, band=band, dilation=dilation, min_cavity=min_cavity)
    grid = SdfGrid(values.astype(np.float32), -BOUNDS, BOUNDS)
    return WatertightResult(grid, center, float(scale), mode, stats)


def watertight_mesh(mesh: TriMesh, resolution: int = 256, band: float = DEFAULT_BAND,
                    dilation: int | None = None) -> TriMesh:
    """Dense closed "MeshGen-like" mesh of ``mesh``: marching cubes of ``mesh_to_sdf`` mapped back to the
    input frame. Returns float32 [V, 3] positions in the mesh's units, int32 [F, 3] CCW outward faces;
    ``meta["watertight_mode"]`` is "solid" or "shell" (see the module docstring)."""
    result = mesh_to_sdf(mesh, resolution, band, dilation)
    dense = extract_mesh(result.grid, 0.0, backend="numpy")
    out = TriMesh(result.to_mesh_frame(dense.vertices), dense.faces, meta=dict(dense.meta))
    out.meta["watertight_mode"] = result.mode
    return out
