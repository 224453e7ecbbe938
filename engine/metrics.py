"""Mesh quality metrics of paper 6.1 / Table 2 (host numpy; BVH queries from engine.geometry.bvh).

- ``chamfer_hausdorff``: exact point-to-SURFACE distances (not point-to-point-cloud). ``n`` points are
  sampled area-uniformly on each mesh, and each sample's distance to the other mesh's surface is found
  with ``Bvh.closest_point``. Both meshes first go through the same similarity transform, chosen so the
  reference's bounding box becomes a box inside the unit cube: translate its min corner to 0, scale by
  1 / (longest side). Chamfer = (mean_ref->cand + mean_cand->ref) / 2 of plain (not squared) distances,
  the paper's "average minimum distance of points in one set against the other, in both directions";
  Hausdorff = max of the two directional maxima (a sampled lower bound of the true Hausdorff distance).
- ``normal_angular_error``: mean angle (degrees, 0..180, orientation-aware) between the candidate's face
  normal at its samples and the reference's face normal at the closest reference point ("Geo mean").
- ``flipped_normal_pixels``: the paper renders ``views`` views with and without back-face culling and
  counts pixels that differ. Both renders agree at a pixel exactly when its nearest surface (no culling)
  is front-facing: then culling keeps the same nearest face; when it is back-facing (dot(face normal,
  ray direction) > 0, CCW fronts) the culled render shows another face or background. So we count
  pixels whose nearest hit is back-facing, over orthographic ray grids from Fibonacci viewpoints that
  cover the bounding sphere (engine.geometry.hidden_faces's cameras). Edge-on faces are never hit.
- ``volumetric_iou``: occupancy of ``n`` uniform points in the union bounding box, inside = odd number of
  surface crossings; three rays per point (near +x, +y, +z, tilted off the axes so they do not run along
  axis-aligned faces or edges) vote, majority wins. Meaningful for closed meshes.
"""

from __future__ import annotations

import numpy as np

from engine.errors import ConfigError, MeshError
from engine.geometry.bvh import Bvh, build_bvh
from engine.geometry.hidden_faces import bounding_sphere, fibonacci_sphere, ortho_view_rays
from engine.geometry.mesh import TriMesh, face_areas, face_normals, validate_mesh

_PARITY_DIRS = np.array([[1.0, 0.0123, 0.0171], [0.0137, 1.0, -0.0219], [-0.0191, 0.0113, 1.0]])
_MAX_CROSSINGS = 256


def _check_n(n: int) -> None:
    if n < 1:
        raise ConfigError(f"metric sample count {n} must be >= 1", "use e.g. n=100_000")


def sample_surface(mesh: TriMesh, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n area-uniform surface samples: points float32 [n, 3], face_id int32 [n], bary float32 [n, 3]
    (weights of the face's v0, v1, v2). Deterministic for a given seed."""
    validate_mesh(mesh, "mesh to sample")
    _check_n(n)
    area = face_areas(mesh.vertices, mesh.faces)
    total = float(area.sum())
    if not total > 0:
        raise MeshError("mesh to sample has zero surface area", "give a mesh with non-degenerate faces")
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(area) / total
    face_id = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), mesh.num_faces - 1)
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    bary = np.stack([1.0 - r1, r1 * (1.0 - r2), r1 * r2], axis=1)             # uniform on a triangle
    tri = mesh.vertices[mesh.faces[face_id]].astype(np.float64)              # [n, 3, 3]
    points = np.einsum("nk,nkc->nc", bary, tri)
    return points.astype(np.float32), face_id.astype(np.int32), bary.astype(np.float32)


def _normalised(mesh: TriMesh, origin: np.ndarray, scale: float) -> TriMesh:
    return TriMesh((mesh.vertices.astype(np.float64) - origin) * scale, mesh.faces)


def chamfer_hausdorff(reference: TriMesh, candidate: TriMesh, n: int = 100_000,
                      seed: int = 0) -> tuple[float, float]:
    """(Chamfer, Hausdorff) in reference-normalised units (see module docstring)."""
    validate_mesh(reference, "reference mesh")
    validate_mesh(candidate, "candidate mesh")
    lo, hi = reference.bounds()
    extent = float((hi - lo).max())
    if not extent > 0:
        raise MeshError("reference mesh has a zero-size bounding box", "give a mesh with some extent")
    ref = _normalised(reference, lo.astype(np.float64), 1.0 / extent)
    cand = _normalised(candidate, lo.astype(np.float64), 1.0 / extent)
    p_ref = sample_surface(ref, n, seed)[0]
    p_cand = sample_surface(cand, n, seed + 1)[0]
    d_rc = build_bvh(cand.vertices, cand.faces).closest_point(p_ref).distance.astype(np.float64)
    d_cr = build_bvh(ref.vertices, ref.faces).closest_point(p_cand).distance.astype(np.float64)
    chamfer = 0.5 * (d_rc.mean() + d_cr.mean())
    return float(chamfer), float(max(d_rc.max(), d_cr.max()))


def normal_angular_error(reference: TriMesh, candidate: TriMesh, n: int = 100_000, seed: int = 0) -> float:
    """Mean angle in degrees between candidate face normals at n samples and the reference face normal at
    each sample's closest reference point. Flipped faces count as 180 degrees."""
    validate_mesh(reference, "reference mesh")
    points, face_id, _ = sample_surface(candidate, n, seed)
    hits = build_bvh(reference.vertices, reference.faces).closest_point(points)
    n_cand = face_normals(candidate.vertices, candidate.faces)[face_id].astype(np.float64)
    n_ref = face_normals(reference.vertices, reference.faces)[hits.face_id].astype(np.float64)
    cos = np.clip((n_cand * n_ref).sum(axis=1), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def flipped_normal_pixels(mesh: TriMesh, views: int = 24, resolution: int = 1024) -> int:
    """Number of pixels, over ``views`` orthographic views of ``resolution``^2 rays, whose nearest surface
    is back-facing (= pixels where renders with and without back-face culling disagree)."""
    validate_mesh(mesh, "mesh")
    if views < 1 or resolution < 1:
        raise ConfigError(f"flipped-normal views={views}, resolution={resolution} must be >= 1",
                          "use e.g. 24 views at 1024 px")
    bvh = build_bvh(mesh.vertices, mesh.faces)
    normals = face_normals(mesh.vertices, mesh.faces).astype(np.float64)
    center, radius = bounding_sphere(mesh)
    flipped = 0
    for d in fibonacci_sphere(views):
        origins, w = ortho_view_rays(d, center, radius, resolution)
        fid = bvh.ray_cast(origins, np.broadcast_to(w, origins.shape)).face_id
        fid = fid[fid >= 0]
        flipped += int((normals[fid] @ w > 0).sum())
    return flipped


def _crossing_parity(bvh: Bvh, points: np.ndarray, direction: np.ndarray, step: float) -> np.ndarray:
    """bool [P]: odd number of surface crossings along the ray from each point. After each hit the ray
    restarts ``step`` past it, so a hit on an edge shared by two faces counts once."""
    d = np.broadcast_to(direction / np.linalg.norm(direction), points.shape)
    origin = points.astype(np.float64)
    odd = np.zeros(points.shape[0], bool)
    active = np.arange(points.shape[0])
    for _ in range(_MAX_CROSSINGS):
        if active.size == 0:
            break
        hits = bvh.ray_cast(origin[active], d[active])
        hit = hits.face_id >= 0
        active, t = active[hit], hits.t[hit].astype(np.float64)
        odd[active] ^= True
        origin[active] += (t + step)[:, None] * d[active]
    return odd


def inside_mesh(mesh: TriMesh, points: np.ndarray) -> np.ndarray:
    """bool [P]: points [P, 3] inside the closed mesh by a 3-ray crossing-parity majority vote."""
    validate_mesh(mesh, "mesh")
    bvh = build_bvh(mesh.vertices, mesh.faces)
    step = 1e-7 * max(mesh.diagonal(), 1e-30)
    votes = sum(_crossing_parity(bvh, points, d, step).astype(np.int32) for d in _PARITY_DIRS)
    return votes >= 2


def volumetric_iou(a: TriMesh, b: TriMesh, n: int = 100_000, seed: int = 0) -> float:
    """Intersection over union of the volumes of two closed meshes, from n uniform points in the union
    bounding box (Monte-Carlo standard error about sqrt(IoU (1 - IoU) / (n * union share))). Returns 0.0
    when no point falls inside either mesh."""
    _check_n(n)
    validate_mesh(a, "first mesh")
    validate_mesh(b, "second mesh")
    (lo_a, hi_a), (lo_b, hi_b) = a.bounds(), b.bounds()
    lo, hi = np.minimum(lo_a, lo_b).astype(np.float64), np.maximum(hi_a, hi_b).astype(np.float64)
    points = lo + np.random.default_rng(seed).random((n, 3)) * (hi - lo)
    occ_a, occ_b = inside_mesh(a, points), inside_mesh(b, points)
    union = int((occ_a | occ_b).sum())
    return float((occ_a & occ_b).sum() / union) if union else 0.0
