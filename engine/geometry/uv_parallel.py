"""Partitioned parallel UV unwrapping (paper 6.3): xatlas on spatial parts in a worker pool, one packing.

Measured on the 20K-face armadillo (2-core CPU): serial ``unwrap_uv`` 2.9 s = ``generate`` 2.05 s
(segmentation + LSCM + first packing) + ~5 re-packs of ~0.17 s to fill one atlas. The xatlas binding
holds the GIL (two threads take as long as serial), so parallelism needs processes. Design:

  1. Partition: recursive bisection of the faces at the area median along the axis of largest centroid
     spread (the paper's compact, area-balanced macro-parts), ``parts`` = workers (>= 1 part per 500
     faces).
  2. Halo: each part is unwrapped with ``halo`` rings of vertex-adjacent faces around it, so charts near
     the cut see their surroundings; only the part's own (core) faces are kept. A face belongs to exactly
     one part, so there are no orphans. A kept chart is a subset of an xatlas chart, whose LSCM map is
     injective, so it stays overlap-free. Charts cut by a partition boundary stay two charts (no merge
     pass: costs a few more charts and seams; see the benchmark's chart counts).
  3. Each part runs the full xatlas pipeline (segment, parameterise, cheap pack) in a worker process at
     one shared texel density, so chart UVs of all parts are in the same world units.
  4. One packing of all charts (``add_uv_mesh``: charts unchanged, only placed and rotated) into one
     ``resolution``^2 atlas with the same options as ``unwrap_uv``; the largest scale that fits is searched
     with one candidate scale per worker per round on a 2.5 % grid (serial: 5 % shrink / 6 % grow steps).

Output contract = ``unwrap_uv``: split vertices with ``meta["vmapping"]`` (int64 [V']), normals fixed
before seams, faces in input order, glTF UVs in [0, 1]; returns ``UvReport`` (charts, utilisation
measured by rasterising, seconds). Pool: one persistent process pool per worker count, started on first use
(``uv_pool(workers)`` starts it explicitly and reports its start seconds; spawned processes). ``workers=1``
runs everything in-process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from engine.errors import ConfigError, MeshError, MissingDependencyError
from engine.geometry.mesh import TriMesh, face_areas, validate_mesh
from engine.geometry.rasterize import rasterize_uv
from engine.geometry.uv_unwrap import UvReport, welded_vertex_normals

_FACES_PER_PART = 500        # below this a part's xatlas overhead outweighs the parallel gain
_FACES_PER_SMALL_PART = 1250  # bitmap path: 16 parts for 20K faces (xatlas: 0.5 s at 5.5K, 0.2 s at 1.7K)
_GRID = 1.025                # scale step of the packing search
_POOLS: dict[int, tuple[ProcessPoolExecutor, float]] = {}
WORKER_TIMEOUT_S = 300.0     # one map over the workers; xatlas has looped forever on a degenerate input


def _xatlas():
    try:
        import xatlas
    except ImportError:
        raise MissingDependencyError("xatlas", "geometry") from None
    return xatlas


def _pack_options(resolution: int, padding: int, texels_per_unit: float, final: bool = True):
    """``unwrap_uv``'s options for the final packing; for a part's throw-away packing (``final`` False)
    no gutter, no bilinear margin, no block alignment (27 % less time per part, charts identical)."""
    po = _xatlas().PackOptions()
    po.resolution, po.padding, po.texels_per_unit = resolution, padding, texels_per_unit
    po.bilinear = final
    po.blockAlign = final
    return po


# ---------------------------------------------------------------- partition and halo

def partition_faces(vertices: np.ndarray, faces: np.ndarray, parts: int) -> np.ndarray:
    """Part id int32 [F] in [0, parts): recursive bisection at the area median along the axis of largest
    centroid spread; a split into k + (n - k) parts puts k/n of the area on the low side."""
    cent = vertices[faces].mean(axis=1)                                # [F, 3]
    area = face_areas(vertices, faces).astype(np.float64) + 1e-30
    out = np.zeros(len(faces), np.int32)
    stack = [(np.arange(len(faces)), 0, parts)]
    while stack:
        idx, first, n = stack.pop()
        if n == 1 or len(idx) <= 1:
            out[idx] = first
            continue
        c = cent[idx]
        axis = int(np.argmax(c.max(axis=0) - c.min(axis=0)))
        idx = idx[np.argsort(c[:, axis], kind="stable")]
        k = n // 2
        cum = np.cumsum(area[idx])
        cut = int(np.clip(np.searchsorted(cum, cum[-1] * k / n), 1, len(idx) - 1))
        stack += [(idx[:cut], first, k), (idx[cut:], first + k, n - k)]
    return out


def halo_faces(faces: np.ndarray, core: np.ndarray, num_vertices: int, rings: int) -> np.ndarray:
    """Bool [F]: the core faces plus ``rings`` rings of faces sharing a vertex with them."""
    mask = core.copy()
    for _ in range(rings):
        touched = np.zeros(num_vertices, bool)
        touched[faces[mask].reshape(-1)] = True
        mask = touched[faces].any(axis=1)
    return mask


# ---------------------------------------------------------------- worker tasks (picklable, top level)

def _unwrap_part(vertices: np.ndarray, faces: np.ndarray, n_core: int, texels_per_unit: float):
    """xatlas on one part (core faces first, then halo). Returns (vmap into ``vertices`` [V'],
    core faces [n_core, 3] into V', uv [V', 2] in world units, charts of the whole part)."""
    xatlas = _xatlas()
    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices, faces.astype(np.uint32))
    atlas.generate(xatlas.ChartOptions(), _pack_options(0, 0, texels_per_unit, final=False))
    if atlas.chart_count < 1:                                       # only degenerate faces: UV 0 like xatlas
        return (faces[:n_core].reshape(-1).astype(np.int64), np.arange(3 * n_core).reshape(-1, 3),
                np.zeros((3 * n_core, 2), np.float64), 0)
    vmap, out_faces, uv = atlas[0]
    core = out_faces[:n_core].astype(np.int64)
    used, remap = np.unique(core, return_inverse=True)
    uv = uv[used].astype(np.float64) * np.array([atlas.width, atlas.height]) / texels_per_unit
    return vmap[used].astype(np.int64), remap.reshape(-1, 3), uv, atlas.chart_count


def _pack_at(texels: np.ndarray, faces: np.ndarray, resolution: int, padding: int, scale: float):
    """One xatlas packing of the UV charts at ``scale``; None when they need more than one atlas, else
    (vmap [V''], faces [F, 3], uv [V'', 2] in texels, charts)."""
    xatlas = _xatlas()
    atlas = xatlas.Atlas()
    atlas.add_uv_mesh(texels, faces.astype(np.uint32))
    atlas.generate(xatlas.ChartOptions(), _pack_options(resolution, padding, scale))
    if atlas.atlas_count != 1:
        return None
    vmap, out_faces, uv = atlas[0]
    uv = uv * np.array([atlas.width, atlas.height], np.float64)
    if _uv_area(uv, out_faces) < 0.98 * scale * scale * _uv_area(texels, faces):
        return None                                        # xatlas shrank charts larger than the atlas
    return vmap, out_faces, uv, atlas.chart_count


def _uv_area(uv: np.ndarray, faces: np.ndarray) -> float:
    e1, e2 = uv[faces[:, 1]] - uv[faces[:, 0]], uv[faces[:, 2]] - uv[faces[:, 0]]
    return float(np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum() / 2)


# ---------------------------------------------------------------- pool

def uv_pool(workers: int) -> tuple[ProcessPoolExecutor | None, float]:
    """(persistent pool of ``workers`` processes, seconds its start took); (None, 0) for 1 worker. The
    start (spawn + imports, ~1-2 s) is paid once per process and reported separately. Spawn, not fork:
    forking a parent that runs threads (torch, numba, xatlas's scheduler) deadlocked workers in tests."""
    if workers <= 1:
        return None, 0.0
    if workers not in _POOLS:
        t0 = time.perf_counter()
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
        list(pool.map(_xatlas_ready, range(workers)))                # start and import now, not mid-unwrap
        _POOLS[workers] = (pool, time.perf_counter() - t0)
    return _POOLS[workers]


def _xatlas_ready(_: int) -> bool:
    return _xatlas() is not None


def _drop_pool(pool) -> None:
    key = next((k for k, v in _POOLS.items() if v[0] is pool), None)
    if key is not None:
        _POOLS.pop(key)
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:                                                  # a worker stuck in xatlas's C++
        proc.kill()


def _run(pool, fn, jobs):
    if pool is None:
        return [fn(*job) for job in jobs]
    try:
        return list(pool.map(fn, *zip(*jobs), timeout=WORKER_TIMEOUT_S))
    except BrokenProcessPool:
        _drop_pool(pool)
        raise MeshError("a UV worker process died inside xatlas", "retry with workers=1") from None
    except TimeoutError:
        _drop_pool(pool)
        raise MeshError(f"UV unwrapping of one part took over {WORKER_TIMEOUT_S:.0f} s (xatlas stuck)",
                        "retry with workers=1, or simplify the mesh further") from None


# ---------------------------------------------------------------- stages

def _charts_by_part(mesh: TriMesh, parts: int, halo: int, resolution: int, pool):
    """Unwrap every part in the pool; returns (vmapping [V'], faces [F, 3] in input order, uv [V', 2] in
    world units with parts side by side, charts found by xatlas over all parts incl. halos)."""
    v, f = mesh.vertices, mesh.faces
    part = partition_faces(v, f, parts)
    area = float(face_areas(v, f).sum())
    # The final packing's density (~resolution / sqrt(area)): xatlas enlarges charts below ~1 texel, so a
    # lower density here distorts relative chart sizes (64 / sqrt(area): -6 utilisation points).
    texels_per_unit = resolution / max(np.sqrt(area), 1e-12)
    jobs, cores = [], []
    for p in range(parts):
        core = part == p
        ring = halo_faces(f, core, len(v), halo) & ~core
        order = np.concatenate([np.flatnonzero(core), np.flatnonzero(ring)])
        used, local = np.unique(f[order], return_inverse=True)
        jobs.append((v[used], local.reshape(-1, 3).astype(np.int32), int(core.sum()), texels_per_unit))
        cores.append((np.flatnonzero(core), used))
    results = _run(pool, _unwrap_part, jobs)
    vmaps, uvs, faces, base, shift = [], [], np.zeros_like(f, np.int64), 0, 0.0
    for (core_ids, used), (vmap, core_faces, uv, _) in zip(cores, results):
        faces[core_ids] = core_faces + base
        vmaps.append(used[vmap])
        uvs.append(uv - [uv[:, 0].min(initial=0.0) - shift, 0.0])   # disjoint strips: charts never touch
        shift = uvs[-1][:, 0].max(initial=shift) + 1.0 / texels_per_unit * 8
        base += len(vmap)
    return np.concatenate(vmaps), faces, np.concatenate(uvs), sum(r[3] for r in results)


def _pack_one_atlas(uv: np.ndarray, faces: np.ndarray, resolution: int, padding: int, workers: int, pool):
    """Pack into one atlas at the largest scale of a ``_GRID`` search, one candidate per worker per round.

    lo = largest scale that fitted, hi = smallest failing scale above it; rounds stop when hi / lo <=
    _GRID. Before a bracket exists, rounds step by _GRID^2 per candidate away from the known side."""
    start = resolution * np.sqrt(0.6 / max(_uv_area(uv, faces), 1e-30))    # below xatlas's 0.7-0.8 fill
    texels = np.ascontiguousarray(uv, np.float32)
    width, fits, fails = max(workers, 2), {}, []
    for _ in range(16):
        lo = max(fits, default=None)
        hi = min((s for s in fails if lo is None or s > lo), default=None)
        if lo is not None and hi is not None and hi / lo <= _GRID * 1.001:
            break
        if lo is None and hi is None:
            cands = start * _GRID ** np.arange(-(width // 3), width - width // 3, dtype=np.float64)
        elif lo is None:
            if hi < start * 1e-2:
                raise MeshError("UV charts do not fit one atlas", "raise the resolution or simplify further")
            cands = hi * _GRID ** (-2.0 * np.arange(1, width + 1))
        elif hi is None:
            cands = lo * _GRID ** (2.0 * np.arange(1, width + 1))
        else:
            cands = lo * (hi / lo) ** (np.arange(1, width + 1) / (width + 1))
        results = _run(pool, _pack_at, [(texels, faces, resolution, padding, float(s)) for s in cands])
        for s, r in zip(cands, results):
            if r is None:
                fails.append(float(s))
            else:
                fits[float(s)] = r
    if not fits:
        raise MeshError("UV charts do not fit one atlas", "raise the resolution or simplify further")
    return fits[max(fits)]


def _check_workers(workers: int | None) -> int:
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if int(workers) != workers or workers < 1:
        raise ConfigError(f"UV workers {workers} must be a positive integer", "use workers >= 1 or None")
    return int(workers)


def _check(mesh: TriMesh, resolution: int, padding: int, workers: int | None) -> int:
    validate_mesh(mesh, "mesh to unwrap")
    if int(resolution) != resolution or not 16 <= resolution <= 16384:
        raise ConfigError(f"UV atlas resolution {resolution} out of range", "use an integer in [16, 16384]")
    if int(padding) != padding or not 0 <= padding <= 64:
        raise ConfigError(f"UV padding {padding} out of range", "use an integer in [0, 64] texels")
    workers = _check_workers(workers)
    if mesh.normals is not None and np.shape(mesh.normals) != (mesh.num_vertices, 3):
        raise MeshError(f"mesh normals have shape {np.shape(mesh.normals)}",
                        f"give normals of shape ({mesh.num_vertices}, 3) or none")
    return int(workers)


class UvUnwrapper:
    """Partitioned parallel UV unwrapping with a pool the caller owns: build once, ``warmup()``, call
    ``unwrap`` per mesh, ``close()`` at shutdown (or use as a context manager).

    workers: processes (None: the CPUs this process may use; 1: all in-process); halo: face rings of
    context per part (0..8); packer: "bitmap" (charts of all parts packed once by ``uv_pack``, candidate
    scales in parallel) or "xatlas" (xatlas's packer with the grid scale search: the previous path).
    Spawned processes, nothing runs at import."""

    def __init__(self, workers: int | None = None, halo: int = 2, packer: str = "bitmap"):
        self.workers = _check_workers(workers)
        if int(halo) != halo or not 0 <= halo <= 8:
            raise ConfigError(f"UV halo {halo} out of range", "use an integer in [0, 8] rings")
        if packer not in ("bitmap", "xatlas"):
            raise ConfigError(f"UV packer {packer!r} unknown", "use 'bitmap' or 'xatlas'")
        self.halo, self.packer, self._pool, self.start_seconds = int(halo), packer, None, 0.0

    def warmup(self) -> float:
        """Start the worker processes (spawn, imports, numba kernels compiled or loaded from cache in every
        process) so no request pays it; returns the seconds it took (0 when already warm)."""
        if self._pool is not None or self.workers <= 1:
            if self.workers <= 1 and self.start_seconds == 0.0:
                t0 = time.perf_counter()
                _worker_ready(0)
                self.start_seconds = time.perf_counter() - t0
            return 0.0 if self.workers > 1 else self.start_seconds
        t0 = time.perf_counter()
        self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        list(self._pool.map(_worker_ready, range(self.workers)))
        _worker_ready(0)
        self.start_seconds = time.perf_counter() - t0
        return self.start_seconds

    def close(self) -> None:
        """Shut the worker processes down (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> UvUnwrapper:
        self.warmup()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def unwrap(self, mesh: TriMesh, resolution: int = 1024, padding: int = 2) -> tuple[TriMesh, UvReport]:
        """UV-unwrap ``mesh`` into one ``resolution``^2 atlas: the contract of ``unwrap_uv_parallel``."""
        t0 = time.perf_counter()
        _check(mesh, resolution, padding, self.workers)
        self.warmup()
        try:
            return _unwrap(mesh, resolution, padding, self.workers, self.halo, self.packer, self._pool, t0)
        except MeshError:
            if self._pool is not None and getattr(self._pool, "_broken", False):
                _drop_pool(self._pool)
                self._pool = None
            raise


def _worker_ready(_: int) -> bool:
    """Import xatlas and compile (or load) the packer's numba kernels in this process."""
    from engine.geometry.uv_pack import pack_charts

    uv = np.array([[0, 0], [1, 0], [0, 1]], np.float64)
    pack_charts(uv, np.array([[0, 1, 2]]), np.zeros(1, np.int64), 16, 1)
    return _xatlas() is not None


def _pack_bitmap(uv, faces, resolution, padding, pool):
    """One packing pass of all parts' charts (``uv_pack``); returns ``_pack_one_atlas``'s tuple."""
    from engine.geometry.uv_pack import pack_charts
    from engine.geometry.uv_quality import uv_charts

    charts, chart = uv_charts(faces, len(uv))
    map_fn = map if pool is None else (lambda *a: pool.map(*a, timeout=WORKER_TIMEOUT_S))
    try:
        texels, _ = pack_charts(uv, faces, chart, resolution, padding, map_fn)
    except ValueError:
        raise MeshError(f"{charts} UV charts do not fit one {resolution}^2 atlas with {padding} texels of "
                        "padding", "raise the resolution or simplify") from None
    except BrokenProcessPool:
        raise MeshError("a UV worker process died while packing", "retry with workers=1") from None
    return np.arange(len(uv)), faces, texels, charts


def _unwrap(mesh, resolution, padding, workers, halo, packer, pool, t0) -> tuple[TriMesh, UvReport]:
    normals = mesh.normals
    if normals is None:
        normals = welded_vertex_normals(mesh.vertices, mesh.faces)
    parts = max(1, min(workers, mesh.num_faces // _FACES_PER_PART))
    if packer == "bitmap" and workers > 1:      # xatlas charting is superlinear in faces: smaller parts
        parts = max(parts, mesh.num_faces // _FACES_PER_SMALL_PART)
    vmap1, faces1, uv1, found = _charts_by_part(mesh, parts, halo, resolution, pool)
    if found < 1:
        raise MeshError("xatlas produced no charts", "check the mesh has faces with non-zero area")
    used = packer
    if packer == "bitmap":
        try:
            vmap2, faces, texels, charts = _pack_bitmap(uv1, faces1, resolution, padding, pool)
        except MeshError as err:            # the bitmap packer gave up: xatlas's packer, said in the meta
            used = f"xatlas (bitmap packer failed: {err})"
    if used != "bitmap":
        vmap2, faces, texels, charts = _pack_one_atlas(uv1, faces1, resolution, padding, workers, pool)
    vmapping = vmap1.astype(np.int64)[vmap2]                           # [V'] input vertex per output vertex
    uvs = (texels / resolution).astype(np.float32)                   # [V', 2] glTF (u right, v down)
    out = TriMesh(
        mesh.vertices[vmapping], faces.astype(np.int32),
        normals=np.asarray(normals, np.float32)[vmapping], uvs=uvs,
        colors=None if mesh.colors is None else np.asarray(mesh.colors)[vmapping],
        meta={k: v for k, v in mesh.meta.items() if k not in ("materials", "face_material", "vmapping")},
    )
    out.meta["vmapping"], out.meta["uv_packer"] = vmapping, used
    face_id, _ = rasterize_uv(uvs, out.faces, resolution)
    return out, UvReport(int(charts), float((face_id >= 0).mean()), time.perf_counter() - t0)


_UNWRAPPERS: dict[tuple[int, int, str], UvUnwrapper] = {}


def unwrap_uv_parallel(mesh: TriMesh, resolution: int = 1024, padding: int = 2, workers: int | None = None,
                       halo: int = 2, packer: str = "bitmap") -> tuple[TriMesh, UvReport]:
    """UV-unwrap ``mesh`` into one ``resolution`` x ``resolution`` atlas, parts in parallel (see module doc).

    mesh: TriMesh (float32 [V, 3], int32 [F, 3]); existing ``normals`` are kept, else smooth normals are
        computed before the seam split. resolution: atlas edge in texels (16..16384); padding: gutter
        texels per chart (0..64); workers: processes (None: the CPUs this process may use); halo: face
        rings of context around each part (0..8); packer: see ``UvUnwrapper``. Uses one module-level
        ``UvUnwrapper`` per (workers, halo, packer), started on first use; an engine should own its own.
    Returns (mesh with split vertices gathered through ``meta["vmapping"]`` int64 [V'], same faces in the
    same order, ``uvs`` float32 [V', 2] glTF in [0, 1]; UvReport) -- the contract of ``unwrap_uv``.
    """
    t0 = time.perf_counter()
    workers = _check(mesh, resolution, padding, workers)
    key = (workers, int(halo) if int(halo) == halo else -1, packer)
    unwrapper = _UNWRAPPERS.get(key) or UvUnwrapper(workers, halo, packer)
    _UNWRAPPERS[key] = unwrapper
    unwrapper.warmup()
    out, report = unwrapper.unwrap(mesh, resolution, padding)
    return out, UvReport(report.charts, report.utilisation, time.perf_counter() - t0)
