"""Hidden-face removal on the GPU (paper 6.2): z-buffer visibility from a sphere of views, then a
normal-gated flood fill or escape rays, all on ``kernel_device()``. Same semantics and report as
``engine.geometry.hidden_faces.remove_hidden_faces`` (the reference; read its docstring).

1. Visibility. The reference casts ``resolution^2`` parallel rays per Fibonacci view and keeps each ray's
   nearest hit, on either side of the face. For parallel rays through pixel centres that nearest hit is
   the face winning the depth test at that pixel with no culling, so the views are rasterised
   (``triton_kernels.rasterize_views``) with the same framing: camera looking along ``-direction``, image
   right = the reference's ``u``, image up = ``-v`` (rows go along ``+v``), half extent = the bounding
   sphere's radius, centre = its centre. The default pass packs (depth, face) into a global int64
   z-buffer per batch of views with atomic min, then flags every face that wins a pixel (``count > 0`` of
   the reference's hit counts; no per-face counting is needed for the decision). The binned alternative
   (``mark_visible_views``: per-tile triangle lists, a shared-memory z-buffer per 32 x 32 tile) gives the
   same set with ~8x less memory but was measured slower on the H100 (see ``views_visible_gpu``).
   Equal to the rays except where a ray passes exactly through a shared edge or vertex (the rasteriser
   gives the pixel to one face by the top-left rule, the ray caster to the nearer or first-found one) or
   where two faces' depths tie to float32 rounding.
2. ``HiddenFaceMethod.FLOOD_FILL`` (the default; ``triton_kernels.face_flood_fill``). Face adjacency comes
   from the sorted undirected edge keys (torch sort): faces grouped per edge and, per face, its three edge
   groups. A breadth-first search from the ray-visible faces, level by level: a face of the frontier promotes
   each not-yet-visible face sharing one of its edges whose normal agrees with the frontier face's seed normal
   (``dot > NORMAL_AGREEMENT``), claiming it with an atomic compare-and-swap of the seed and appending (face,
   seed) to the next frontier. Level 0 is one grid launch over all faces; the remaining levels run in a single
   block that loops until a level promotes nothing (barriers between levels, frontier sizes in shared memory):
   the whole fill is two launches and never waits on the host. The reference's BFS is order-dependent (a face
   reachable from two fronts takes the first front's seed) and so is this parallel version, differently. The
   invariants both keep, and the tests check: every promoted face has a ray-visible seed whose normal agrees
   with it (dot > 0.5) and is reachable from that seed through faces carrying the same seed; no kept face
   could promote a discarded neighbour (fixed point); faces sharing no edge with a visible one (interior
   shells) are never promoted. Zero-area faces have zero normals and are never promoted.
   ``HiddenFaceMethod.ESCAPE_RAYS``: escape rays (``engine.geometry.hidden_faces_escape``, the reference's
   own code: torch ray generation, counter-hashed rotations and portal picks) for every face the views
   missed, with the GPU BVH (``engine.geometry.bvh_gpu``, LBVH kernels in ``triton_kernels/lbvh.py``)
   answering hit / miss instead of the host any-hit kernel: the same rays, so the same faces, up to BVH
   ties on shared edges. Tested against the reference only in numba's CUDA simulator (tiny inputs); its
   cost on a GPU is not measured yet.

3. The escape check (``engine.geometry.hidden_faces_verify``, the reference's step 3; ``verify=True``, the
   default): the faces the GPU passes leave to remove (tens to hundreds) are tested on the host CPU with a
   host BVH after the device passes -- a CPU step on a small set, not a kernel; its cost on the GPU machine
   is not measured yet (0-2.5 s per mesh on the 2-core CPU at 96 x 256 views, where the candidates are
   of the same kind).

Cost: views x F triangle setups (x3: count, fill, raster), views x (covered tile pixels) shared-memory
depth tests, ~12 B of global traffic per (view, tile, face) entry, and F-sized torch passes plus two
launches for the fill; escape rays instead: one LBVH build and the rays of the faces the views missed (a
few per visible face, ~1-12K per hidden face: the reference's docstring). Host syncs: input checks, the
bounding sphere, one per-view entry total read, the edge grouping (nonzero) and the report counts -- none
per view, tile or fill level; escape rays add one per direction chunk and round.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from engine.errors import ConfigError, MeshError
from engine.geometry.bvh_gpu import build_bvh_gpu
from engine.geometry.device_mesh import DeviceMesh
from engine.geometry.hidden_faces import (
    NORMAL_AGREEMENT,
    HiddenFaceMethod,
    HiddenFaceReport,
    _ortho_basis,
    compact_faces,
    escape_directions,
    fibonacci_sphere,
)
from engine.geometry.hidden_faces_escape import ESCAPE_DIRECTIONS, escape_visibility
from engine.geometry.hidden_faces_verify import keep_provable
from engine.geometry.mesh import TriMesh, validate_mesh
from triton_kernels.face_flood_fill import FILL_THREADS as FILL_THREADS  # re-exported
from triton_kernels.face_flood_fill import edge_groups as edge_groups  # re-exported
from triton_kernels.face_flood_fill import face_flood_fill
from triton_kernels.numba_cuda import kernel_device
from triton_kernels.rasterize_views import mark_visible_faces, mark_visible_views, zbuffer_views


def view_params(views: int, center: np.ndarray, radius: float, device: torch.device) -> torch.Tensor:
    """float64 [views, 13] rasteriser cameras (r, u, d, h, c) reproducing the reference's ray grids."""
    rows = []
    for d in fibonacci_sphere(views):
        w = -d / np.linalg.norm(d)
        u, v = _ortho_basis(w)
        rows.append(np.concatenate([u, -v, -w, [radius], center]))
    return torch.from_numpy(np.asarray(rows, np.float64)).to(device)


def bounding_sphere_device(mesh: DeviceMesh) -> tuple[np.ndarray, float]:
    """(centre float64 [3], radius) exactly as ``hidden_faces.bounding_sphere`` (two small host reads)."""
    used = mesh.vertices[torch.unique(mesh.faces.long())]                        # [U, 3] float32
    lo, hi = used.min(0).values.double(), used.max(0).values.double()
    center = (lo + hi) / 2.0
    radius = float(torch.linalg.norm(used.double() - center, dim=1).max())
    return center.cpu().numpy(), max(radius * 1.001, 1e-12)


VISIBILITY_METHODS = ("atomic", "binned")
ATOMIC_BATCH_BYTES = 1 << 30      # z-buffer + face flags per batch of views of the atomic pass


def views_visible_gpu(mesh: DeviceMesh, views: int, resolution: int, method: str = "atomic",
                      **tuning) -> torch.Tensor:
    """bool [F] on the mesh's device: faces winning at least one pixel of the ``views`` Fibonacci views
    (the reference's ``ray_hit_counts(...) > 0``). Both methods give the same set (checked on the H100):
    ``"atomic"`` (default): global packed int64 z-buffer per batch of views (``zbuffer_views``) then a mark
    pass -- measured faster on the H100 at 512 views x 1024 px (82-118 ms vs 153-190 ms on 20K-37K faces);
    ``"binned"``: ``mark_visible_views`` (per-tile lists, shared-memory z-buffer; ``tuning``: its
    ``max_entries``, ``group``, ``threads``), far less memory (~0.14 GB)."""
    if method not in VISIBILITY_METHODS:
        raise ConfigError(f"unknown visibility method '{method}'",
                          f"use one of {', '.join(VISIBILITY_METHODS)}")
    center, radius = bounding_sphere_device(mesh)
    cams = view_params(views, center, radius, mesh.device)
    visible = torch.zeros(mesh.num_faces, dtype=torch.uint8, device=mesh.device)
    if method == "binned":
        mark_visible_views(mesh.vertices, mesh.faces, cams, resolution, visible, **tuning)
        return visible.bool()
    per_view = resolution * resolution * 8 + mesh.num_faces * 4
    batch = int(max(1, min(views, ATOMIC_BATCH_BYTES // per_view)))
    for s in range(0, views, batch):
        zbuf = zbuffer_views(mesh.vertices, mesh.faces, cams[s:s + batch].contiguous(), resolution)
        mark_visible_faces(zbuf, visible)
    return visible.bool()


# --------------------------------------------------------------------------------------------------
# Flood fill
# --------------------------------------------------------------------------------------------------

def face_normals_device(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit face normals float32 [F, 3] computed in float64 as ``mesh.face_normals`` (zero for
    degenerate faces)."""
    v = vertices.double()
    f = faces.long()
    n = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=1)
    return (n / torch.linalg.norm(n, dim=1, keepdim=True).clamp_min(1e-30)).float()


def flood_fill_gpu(by_rays: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                   threshold: float = NORMAL_AGREEMENT) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal-gated flood fill from ``by_rays`` (bool [F]). Returns (visible bool [F], seed int32 [F]):
    seed[f] is the ray-visible face whose normal promoted f (f itself when ray-visible, -1 if hidden).
    Two launches (level 0 over all faces, then one block for the remaining levels), no host sync."""
    seed = face_flood_fill(by_rays, faces, face_normals_device(vertices, faces), vertices.shape[0],
                           threshold)
    return seed >= 0, seed


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------

def _check_device_mesh(mesh: DeviceMesh, views: int, resolution: int, directions: int) -> None:
    if mesh.num_faces == 0:
        raise MeshError("mesh for hidden-face removal has no faces", "give a mesh with at least one triangle")
    if not bool(torch.isfinite(mesh.vertices).all()):
        raise MeshError("mesh for hidden-face removal has NaN/Inf positions",
                        "repair or re-export the mesh with finite coordinates")
    if int(mesh.faces.min()) < 0 or int(mesh.faces.max()) >= mesh.num_vertices:
        raise MeshError(f"mesh for hidden-face removal has face indices outside [0, {mesh.num_vertices})",
                        "re-export the mesh; its index buffer is corrupt")
    if views < 1:
        raise ConfigError(f"hidden-face removal needs >= 1 view, got {views}", "use e.g. 96 or 512 views")
    if not 2 <= resolution <= 8192:
        raise ConfigError(f"hidden-face resolution {resolution} out of range", "use a value in [2, 8192]")
    if directions < 1:
        raise ConfigError(f"hidden-face removal needs >= 1 escape direction, got {directions}",
                          f"use e.g. {ESCAPE_DIRECTIONS}")


def escape_visible_gpu(mesh: DeviceMesh, by_views: torch.Tensor, directions: int = ESCAPE_DIRECTIONS
                       ) -> torch.Tensor:
    """bool [F]: ``by_views`` plus the faces the escape rays prove visible, with the GPU BVH."""
    bvh = build_bvh_gpu(mesh.vertices, mesh.faces)

    def query(origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        return bvh.ray_cast(origins, dirs)[0] >= 0

    base, dense = (d.to(mesh.device) for d in escape_directions(directions))
    return escape_visibility(query, mesh.vertices.double(), mesh.faces.long(), by_views,
                             bounding_sphere_device(mesh)[1], base, dense)


def verify_on_host(mesh: DeviceMesh, visible: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Step 3 (``hidden_faces_verify.keep_provable``) on the host CPU: the mesh is copied over once and a
    host BVH built when some face is left to remove (a few ms to ~0.5 s for 1e4-1e5 faces). Returns
    (``visible`` (bool [F], the mesh's device) plus the faces proved visible, how many were added)."""
    if bool(visible.all()):
        return visible, 0
    host = TriMesh(mesh.vertices.cpu().numpy(), mesh.faces.cpu().numpy().astype(np.int32))
    kept, added = keep_provable(host, visible.cpu().numpy())
    return (torch.from_numpy(kept).to(visible.device) if added else visible), added


def _visible_gpu(mesh: DeviceMesh, views: int, resolution: int, method: HiddenFaceMethod, directions: int,
                 verify: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(visible, visible by the views, faces step 3 added)."""
    _check_device_mesh(mesh, views, resolution, directions)
    by_rays = views_visible_gpu(mesh, views, resolution)
    if method is HiddenFaceMethod.ESCAPE_RAYS:
        visible = escape_visible_gpu(mesh, by_rays, directions)
    elif not bool(by_rays.any()):
        visible = by_rays
    else:
        visible = flood_fill_gpu(by_rays, mesh.vertices, mesh.faces)[0]
    if not verify:
        return visible, by_rays, 0
    visible, added = verify_on_host(mesh, visible)
    return visible, by_rays, added


def find_visible_faces_gpu(mesh: DeviceMesh, views: int = 512, resolution: int = 1024,
                           method: HiddenFaceMethod = HiddenFaceMethod.FLOOD_FILL,
                           directions: int = ESCAPE_DIRECTIONS, verify: bool = True
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(visible bool [F], visible_by_views bool [F]) on the mesh's device; see the module docstring.
    ``verify``: step 3 on the host (``verify_on_host``)."""
    return _visible_gpu(mesh, views, resolution, method, directions, verify)[:2]


def compact_device_mesh(mesh: DeviceMesh, keep: torch.Tensor) -> DeviceMesh:
    """Faces ``keep`` (bool [F]) and the vertices they use; ``face_*`` meta arrays of length F follow."""
    faces = mesh.faces[keep]
    used, remap = torch.unique(faces.long(), return_inverse=True)
    meta = dict(mesh.meta)
    keep_host = None
    for key, val in mesh.meta.items():
        if key.startswith("face_") and isinstance(val, np.ndarray) and val.shape[:1] == (mesh.num_faces,):
            keep_host = keep.cpu().numpy() if keep_host is None else keep_host
            meta[key] = val[keep_host]
    return DeviceMesh(mesh.vertices[used], remap.reshape(-1, 3).to(torch.int32), meta)


def remove_hidden_faces_device(mesh: DeviceMesh, views: int = 512, resolution: int = 1024,
                               method: HiddenFaceMethod = HiddenFaceMethod.FLOOD_FILL,
                               directions: int = ESCAPE_DIRECTIONS) -> tuple[DeviceMesh, HiddenFaceReport]:
    """GPU ``remove_hidden_faces`` for the pipeline: DeviceMesh in, compacted DeviceMesh out.

    If no face is visible at all (e.g. every face has zero area) the input is returned unchanged and the
    report's ``note`` says so. ``seconds`` is the wall time including the final device sync.
    """
    start = time.perf_counter()
    if mesh.device != kernel_device():
        raise ConfigError(f"device mesh on {mesh.device}, kernels run on {kernel_device()}",
                          "build it with DeviceMesh.from_trimesh(mesh, kernel_device())")
    visible, by_rays, verified = _visible_gpu(mesh, views, resolution, method, directions, True)
    n_rays, n_visible = int(by_rays.sum()), int(visible.sum())
    if n_visible == 0:
        return mesh, _nothing_visible(mesh.num_faces, method, start)
    out = compact_device_mesh(mesh, visible)
    return out, HiddenFaceReport(mesh.num_faces, out.num_faces, n_rays, out.num_faces - n_rays, method,
                                 time.perf_counter() - start, verified=verified)


def _nothing_visible(num_faces: int, method: HiddenFaceMethod, start: float) -> HiddenFaceReport:
    return HiddenFaceReport(num_faces, num_faces, 0, 0, method, time.perf_counter() - start,
                            "no face is visible (no ray reached any); mesh kept unchanged")


def remove_hidden_faces_gpu(mesh: TriMesh | DeviceMesh, views: int = 512, resolution: int = 1024,
                            method: HiddenFaceMethod = HiddenFaceMethod.FLOOD_FILL,
                            directions: int = ESCAPE_DIRECTIONS) -> tuple[TriMesh, HiddenFaceReport]:
    """``remove_hidden_faces`` with views and step 2 on the GPU. A TriMesh keeps its attributes
    (normals, UVs, ``face_*`` meta) through ``compact_faces``; a DeviceMesh comes back geometry-only."""
    if isinstance(mesh, DeviceMesh):
        out, report = remove_hidden_faces_device(mesh, views, resolution, method, directions)
        return out.to_trimesh(), report
    start = time.perf_counter()
    validate_mesh(mesh, "mesh for hidden-face removal")
    dev_mesh = DeviceMesh.from_trimesh(mesh, kernel_device())
    visible, by_rays, verified = _visible_gpu(dev_mesh, views, resolution, method, directions, True)
    n_rays, n_visible = int(by_rays.sum()), int(visible.sum())
    if n_visible == 0:
        return mesh, _nothing_visible(mesh.num_faces, method, start)
    out = compact_faces(mesh, visible.cpu().numpy())
    return out, HiddenFaceReport(mesh.num_faces, out.num_faces, n_rays, out.num_faces - n_rays, method,
                                 time.perf_counter() - start, verified=verified)
