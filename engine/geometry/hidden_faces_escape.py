"""Escape rays: the per-face visibility test behind hidden-face removal (paper 6.2, step 2).

Criterion. A face is visible when some ray from outside the mesh's bounding sphere reaches a point of it
unobstructed (either side: a back face seen through a hole counts). Reversed, that ray starts on the face
and escapes: it hits nothing. Views (step 1, ``hidden_faces.view_hit_counts``) find most visible faces,
but their directions are fixed: a face deep in a concavity (an open mouth, the inside of a cup, a room
behind a small window) is seen only through a narrow cone of directions that 512 evenly spread views
can all miss. Every face the views did not reach is therefore tested directly, in rounds:

0. Base test: from ``BASE_SAMPLES`` points of the face (barycentric: the centroid and three points 2/3
   of the way to each corner), rays in ``directions`` directions over the whole sphere -- the Fibonacci
   set turned by a pseudo-random rotation per (face, sample), so that neighbouring points and faces look
   along different directions and together cover the sphere far more densely than any one of them.
1+. Until a round proves no new face visible:
   * portals: the first escaping ray of each face proved visible in the previous round (its certificate:
     origin o, direction d) passes through the opening that face is seen by, so the points
     o + t R d (t in ``PORTAL_STEPS``, R the bounding radius) are free space in and beyond that opening.
     Every still hidden face casts rays from ``DENSE_SAMPLES`` towards directions / ``PORTAL_SHARE`` of
     them (picked by hash). A face seen only through a small hole (a few 1e-5 of the sphere of
     directions) is found this way within a round or two of its neighbours;
   * neighbour portals: a still hidden face next to a visible face (newly so, or certified in the
     previous round; edges by position, so UV seams do not count) aims at the points of its edge
     neighbours' certificates and at ``NEIGHBOUR_JITTERS - 1`` jittered copies of each (visibility
     changes little across an edge, so a neighbour's way out is the best guess; a neighbour the views
     proved visible gets a certificate from its own base test first);
   * frontier: once per face, a still hidden face next to a visible one is tested from ``DENSE_SAMPLES``
     (the base points, points near and very near each corner, near each edge midpoint, and three points
     ``EDGE_GAP`` inside each edge: a face slipping under another part can be visible only in a thin band
     along its visible edge or at a corner) in ``FRONTIER_FACTOR`` x ``directions`` rotated Fibonacci
     directions.
A ray starts ``OFFSET`` x R off the face plane on the side it leaves by, so it cannot hit its own face or
a coplanar neighbour. A ray that hits nothing proves the face visible -- unless it grazes the face
(within ``GRAZING_COS`` of its plane, 0.6 degrees): such rays escape through the thin gaps between
stacked coplanar layers, and a face seen only that edge-on covers no pixel. So a face is removed only
when none of its tested rays escapes; a face with zero area is never visible.

Cost: rays go out in chunks (8 directions, then doubling) and a face stops at its first escape, so
visible faces cost a few rays. A hidden face costs 4 x 256 base rays, 22 x 64 portal rays per round that
found new certificates and, next to visible faces, 22 x 105 neighbour-portal rays per round a neighbour
was certified plus 22 x 1024 frontier rays once. Sealed interiors border no visible face: base and portal
rays only. The ray generation is torch on any device, shared by the CPU reference (numba BVH any-hit,
``Bvh.ray_cast(any_hit=True)``) and the GPU path (``GpuBvh.ray_cast``); rotations, portal picks and jitters
are a counter-based hash (splitmix64) of the face id, so both paths cast the same rays (to rounding) and
agree face for face except on rays that pass exactly through an edge.
Limits: a sampling still. A face whose only escape is a cone narrower than the sampling around it can be
removed; benchmarks/results/hidden_faces_recall_cpu.md measures recall against a denser oracle.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

ESCAPE_DIRECTIONS = 256          # base directions per sample point
FRONTIER_FACTOR = 4              # the frontier test uses this many times more directions
PORTAL_SHARE = 4                 # rays per sample towards certificate points: directions / this
PORTAL_STEPS = (0.1, 0.2, 0.4, 0.7, 1.0, 1.5, 2.5)   # certificate points o + t R d (R: bounding radius)
POOL_MAX = 8192                  # certificate points per round (a deterministic stride beyond)
NEIGHBOUR_JITTERS = 5            # targets per neighbour certificate point: itself and 4 jittered copies
JITTER = 0.05                    # jitter half-width, share of the point's distance t R along the certificate
MAX_ROUNDS = 64
OFFSET = 1e-6                    # ray origin offset off the face plane, share of the bounding radius
RAYS_PER_BATCH = 1 << 20
FIRST_CHUNK = 8                  # directions of the first chunk; chunks double after it
_THIRD, _NEAR, _FAR = 1.0 / 3.0, 2.0 / 3.0, 1.0 / 6.0
BASE_SAMPLES = np.array([[_THIRD, _THIRD, _THIRD], [_NEAR, _FAR, _FAR], [_FAR, _NEAR, _FAR],
                         [_FAR, _FAR, _NEAR]])
EDGE_GAP = 0.005                 # edge-hugging samples sit this far (barycentric) inside each edge


def _edge_hugging() -> np.ndarray:
    """[9, 3]: three points along each edge, ``EDGE_GAP`` inside it (a face that slips under another
    surface can be visible only in a thin band along the edge it shares with a visible neighbour)."""
    rows = []
    for k in range(3):                                                       # edge opposite corner k
        for t in (0.2, 0.5, 0.8):
            w = np.zeros(3)
            w[k] = EDGE_GAP
            w[(k + 1) % 3], w[(k + 2) % 3] = (1 - EDGE_GAP) * t, (1 - EDGE_GAP) * (1 - t)
            rows.append(w)
    return np.array(rows)


DENSE_SAMPLES = np.concatenate([BASE_SAMPLES, [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9],
                                               [0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.01, 0.01, 0.98],
                                               [0.475, 0.475, 0.05], [0.05, 0.475, 0.475],
                                               [0.475, 0.05, 0.475]], _edge_hugging()])
GRAZING_COS = 0.01               # an escape within acos(0.01) = 89.4 degrees of the normal proves nothing

Query = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(origins float64 [R, 3], unit directions float64 [R, 3]) -> bool [R]: the ray hits some face."""


def hashed_uniforms(face_ids: np.ndarray, shape: tuple[int, ...], stream: int) -> np.ndarray:
    """float64 [C, *shape] uniforms in [0, 1), a pure function of (face id, index, stream): splitmix64
    of a counter."""
    n = int(np.prod(shape))
    keys = ((np.asarray(face_ids, np.uint64)[:, None] * np.uint64(n) + np.arange(n, dtype=np.uint64))
            * np.uint64(64) + np.uint64(stream))
    z = keys + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) * 2.0**-53).reshape((-1, *shape))


def sample_rotations(face_ids: np.ndarray, n_samples: int, stream: int) -> np.ndarray:
    """float64 [C, S, 3, 3] uniformly random rotations per (face, sample) (Shoemake's quaternion from
    three hashed uniforms)."""
    u = hashed_uniforms(face_ids, (n_samples, 3), stream)                   # [C, S, 3]
    a, b = np.sqrt(1.0 - u[..., 0]), np.sqrt(u[..., 0])
    w, x = a * np.sin(2 * np.pi * u[..., 1]), a * np.cos(2 * np.pi * u[..., 1])
    y, z = b * np.sin(2 * np.pi * u[..., 2]), b * np.cos(2 * np.pi * u[..., 2])
    return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                     np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                     np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product over the last axis of broadcastable [..., 3] tensors."""
    return (a * b).sum(-1)


def unit_normals(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit face normals float64 [F, 3], face has area bool [F]). vertices float64 [V, 3], faces int64
    [F, 3]."""
    p0, p1, p2 = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    e1, e2 = p1 - p0, p2 - p0
    n = torch.stack([e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1], e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2],
                     e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]], 1)
    length = torch.sqrt(_dot(n, n))
    has_area = length > 0
    return n / torch.where(has_area, length, torch.ones_like(length))[:, None], has_area


def sample_points(vertices: torch.Tensor, tri: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """float64 [C, S, 3]: barycentric ``samples`` [S, 3] of the faces ``tri`` int64 [C, 3]."""
    return torch.einsum("sk,ckd->csd", samples, vertices[tri])


def rotated_directions(rot: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """float64 [C, J, S, 3]: rot[c, s] @ dirs[j] for rot [C, S, 3, 3], dirs [J, 3]."""
    return torch.einsum("csij,dj->cdsi", rot, dirs)


def target_directions(pts: torch.Tensor, targets: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """float64 [C, J, S, 3]: unit directions from pts [C, S, 3] towards targets [C, J, S or 1, 3]; the face
    normal where a target coincides with the point."""
    v = targets - pts[:, None]                                               # [C, J, S, 3]
    length = torch.sqrt(_dot(v, v))[..., None]
    return torch.where(length > 0, v / torch.where(length > 0, length, 1.0), normals[:, None, None, :])


def offset_origins(pts: torch.Tensor, cos: torch.Tensor, normals: torch.Tensor,
                   offset: float) -> torch.Tensor:
    """float64 [C, J, S, 3]: pts [C, S, 3] moved ``offset`` off the face plane, on the side each ray
    leaves by (front when cos = dot(direction, normal) [C, J, S] >= 0)."""
    side = torch.where(cos >= 0, offset, -offset)[..., None]
    return pts[:, None] + side * normals[:, None, None, :]


class EscapeTest:
    """Per-face escape tests on one mesh (module docstring): ``query`` answers whether rays hit; vertices
    float64 [V, 3] and faces int64 [F, 3] on its device; radius: the bounding radius."""

    def __init__(self, query: Query, vertices: torch.Tensor, faces: torch.Tensor, radius: float,
                 portal_rays: int) -> None:
        self.query, self.vertices, self.faces, self.radius = query, vertices, faces, radius
        self.portal_rays = portal_rays
        self.normals, self.has_area = unit_normals(vertices, faces)
        self.offset = OFFSET * radius

    def run(self, face_ids: torch.Tensor, samples: np.ndarray, n_dirs: int, make_dirs
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(escaped bool [C], certificate origins, directions float64 [C, 3]; NaN where none) for faces
        ``face_ids`` int64 [C]. make_dirs(idx, pts, j0, j1) -> directions [c, j1 - j0, S, 3] of the
        faces face_ids[idx] (pts [c, S, 3] their sample points)."""
        dev = self.vertices.device
        n_c, n_s = face_ids.shape[0], samples.shape[0]
        found = torch.zeros(n_c, dtype=torch.bool, device=dev)
        cert_o = torch.full((n_c, 3), float("nan"), dtype=torch.float64, device=dev)
        cert_d = cert_o.clone()
        smp = torch.from_numpy(samples).to(dev)
        j0, width = 0, FIRST_CHUNK
        while j0 < n_dirs:
            j1 = min(n_dirs, j0 + width)
            open_ = torch.nonzero(~found).reshape(-1)
            if open_.numel() == 0:
                break
            block = max(1, RAYS_PER_BATCH // ((j1 - j0) * n_s))
            for s in range(0, open_.numel(), block):
                idx = open_[s:s + block]
                f = face_ids[idx]
                pts = sample_points(self.vertices, self.faces[f], smp)
                d = make_dirs(idx, pts, j0, j1)                              # [c, J, S, 3]
                cos = _dot(d, self.normals[f][:, None, None, :])                 # [c, J, S]
                o = offset_origins(pts, cos, self.normals[f], self.offset)
                miss = ~self.query(o.reshape(-1, 3), d.reshape(-1, 3)).reshape(idx.numel(), -1)
                miss &= (cos.abs() >= GRAZING_COS).reshape(idx.numel(), -1)
                esc = miss.any(dim=1)
                first = torch.argmax(miss.to(torch.int8), dim=1)            # lowest (direction, sample)
                hit_idx, first = idx[esc], first[esc]
                found[hit_idx] = True
                cert_o[hit_idx] = o.reshape(idx.numel(), -1, 3)[esc, first]
                cert_d[hit_idx] = d.reshape(idx.numel(), -1, 3)[esc, first]
            j0, width = j1, 2 * width
        return found, cert_o, cert_d

    def fibonacci(self, face_ids: torch.Tensor, samples: np.ndarray, dirs: torch.Tensor, stream: int):
        """Rays in the rotated Fibonacci directions ``dirs`` [D, 3] (base and frontier tests)."""
        rot = torch.from_numpy(sample_rotations(face_ids.cpu().numpy(), samples.shape[0], stream))
        rot = rot.to(self.vertices.device)
        return self.run(face_ids, samples, dirs.shape[0],
                        lambda idx, pts, j0, j1: rotated_directions(rot[idx], dirs[j0:j1]))

    def portals(self, face_ids: torch.Tensor, cert_o: torch.Tensor, cert_d: torch.Tensor, stream: int):
        """Rays from the dense samples towards points on the certificates (cert_o, cert_d) [N, 3]."""
        steps = torch.tensor(PORTAL_STEPS, dtype=torch.float64, device=cert_o.device) * self.radius
        pool = (cert_o[:, None] + steps[None, :, None] * cert_d[:, None]).reshape(-1, 3)   # [N T, 3]
        if pool.shape[0] > POOL_MAX:
            pool = pool[torch.linspace(0, pool.shape[0] - 1, POOL_MAX, device=pool.device).long()]
        k = min(self.portal_rays, pool.shape[0])
        u = hashed_uniforms(face_ids.cpu().numpy(), (k, DENSE_SAMPLES.shape[0]), stream)
        pick = torch.from_numpy(np.minimum((u * pool.shape[0]).astype(np.int64), pool.shape[0] - 1))
        pick = pick.to(self.vertices.device)
        return self.run(face_ids, DENSE_SAMPLES, k,
                        lambda idx, pts, j0, j1: target_directions(pts, pool[pick[idx, j0:j1]],
                                                                   self.normals[face_ids[idx]]))

    def neighbour_portals(self, face_ids: torch.Tensor, partners: torch.Tensor, cert: torch.Tensor,
                          stream: int):
        """Rays from the dense samples towards the points o + t R d of the certificates of the faces'
        edge neighbours and ``NEIGHBOUR_JITTERS - 1`` points within ``JITTER`` t R of each (cert float64
        [F, 2, 3], NaN where none; a missing one aims along the normal)."""
        steps = torch.tensor(PORTAL_STEPS, dtype=torch.float64, device=cert.device) * self.radius
        nb = partners[face_ids]                                              # [C, 3]
        c = cert[nb.clamp_min(0)]                                            # [C, 3, 2, 3]
        tgt = c[:, :, None, 0] + steps[None, None, :, None] * c[:, :, None, 1]   # [C, 3, T, 3]
        u = hashed_uniforms(face_ids.cpu().numpy(), (3, steps.numel(), NEIGHBOUR_JITTERS, 3), stream)
        jit = torch.from_numpy(2.0 * u - 1.0).to(cert.device) * (JITTER * steps)[None, None, :, None, None]
        jit[:, :, :, 0] = 0.0                                                # the certificate point itself
        tgt = (tgt[:, :, :, None] + jit).reshape(face_ids.shape[0], -1, 1, 3)  # [C, 3 T K, 1, 3]
        ok = (nb >= 0)[:, :, None].expand(-1, -1, steps.numel() * NEIGHBOUR_JITTERS)
        ok = ok.reshape(face_ids.shape[0], -1, 1, 1) & ~torch.isnan(tgt[..., :1])
        centre = sample_points(self.vertices, self.faces[face_ids], torch.from_numpy(BASE_SAMPLES[:1])
                               .to(cert.device))[:, None]                    # [C, 1, 1, 3]
        tgt = torch.where(ok, tgt, centre + self.radius * self.normals[face_ids][:, None, None, :])
        return self.run(face_ids, DENSE_SAMPLES, tgt.shape[1],
                        lambda idx, pts, j0, j1: target_directions(pts, tgt[idx, j0:j1],
                                                                   self.normals[face_ids[idx]]))

    def fill_certificates(self, faces: torch.Tensor, visible: torch.Tensor, cert: torch.Tensor,
                          dirs: torch.Tensor, stream: int) -> None:
        """Give the visible faces among ``faces`` (int64, any shape, -1 ignored) that have no certificate
        (the views proved them visible) one: their base test's first escaping ray."""
        ids = torch.unique(faces[faces >= 0])
        ids = ids[visible[ids] & torch.isnan(cert[ids, 0, 0]) & self.has_area[ids]]
        if ids.numel():
            found, o, d = self.fibonacci(ids, BASE_SAMPLES, dirs, stream)
            cert[ids[found], 0], cert[ids[found], 1] = o[found], d[found]

    @staticmethod
    def record(face_ids: torch.Tensor, result, visible: torch.Tensor, cert: torch.Tensor) -> torch.Tensor:
        """Mark the faces a test proved visible and keep their certificates; returns their ids."""
        found, o, d = result
        ids = face_ids[found]
        visible[ids] = True
        cert[ids, 0], cert[ids, 1] = o[found], d[found]
        return ids


def edge_partners(faces: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """int64 [F, 3]: a face sharing edge k (faces[f, k] -> faces[f, k+1]) of each face, -1 on a boundary
    (on a non-manifold edge, the next face of the edge's group, cyclically). faces int64 [F, 3]."""
    a, b = faces, faces[:, [1, 2, 0]]
    keys = (torch.minimum(a, b) * num_vertices + torch.maximum(a, b)).reshape(-1)           # [3F]
    order = torch.argsort(keys, stable=True)
    sk = keys[order]
    start = torch.ones_like(sk, dtype=torch.bool)
    start[1:] = sk[1:] != sk[:-1]
    group = torch.cumsum(start.to(torch.int64), 0) - 1
    first = torch.nonzero(start).reshape(-1)                                 # [G] first slot per group
    size = torch.diff(torch.cat([first, first.new_tensor([sk.numel()])]))
    slot = torch.arange(sk.numel(), device=faces.device)
    nxt = slot + 1
    nxt = torch.where((nxt - first[group]) >= size[group], first[group], nxt)   # cyclic within the group
    partner = torch.empty_like(order)
    partner[order] = order[nxt] // 3
    return torch.where(size[group][torch.argsort(order)] > 1, partner, -1).reshape(-1, 3)


def edge_neighbours_of(mask: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
    """bool [F]: faces sharing an edge with a face in ``mask`` (bool [F]); partners from ``edge_partners``."""
    hit = mask[partners.clamp_min(0)] & (partners >= 0)
    return hit.any(dim=1)


def escape_visibility(query: Query, vertices: torch.Tensor, faces: torch.Tensor, seen: torch.Tensor,
                      radius: float, dirs: torch.Tensor, dense_dirs: torch.Tensor) -> torch.Tensor:
    """bool [F]: ``seen`` (faces the views reached) plus every face the escape rays prove visible.

    vertices float64 [V, 3], faces int64 [F, 3], seen bool [F], all on one device; dirs / dense_dirs
    float64 [D, 3] / [D', 3] unit directions of the base and frontier tests; radius: bounding radius.
    Host syncs: one per direction chunk and a few per round."""
    test = EscapeTest(query, vertices, faces, radius, max(1, dirs.shape[0] // PORTAL_SHARE))
    _, weld = torch.unique(vertices, dim=0, return_inverse=True)            # UV seams split vertices
    partners = edge_partners(weld.reshape(-1)[faces], vertices.shape[0])
    visible = seen.clone()
    cert = torch.full((faces.shape[0], 2, 3), float("nan"), dtype=torch.float64, device=vertices.device)
    ids = torch.nonzero(~visible & test.has_area).reshape(-1)
    new = test.record(ids, test.fibonacci(ids, BASE_SAMPLES, dirs, 0), visible, cert)
    tried = torch.zeros_like(visible)
    for rnd in range(1, MAX_ROUNDS + 1):
        newly = []
        hidden = torch.nonzero(~visible & test.has_area).reshape(-1)
        if new.numel() and hidden.numel():
            newly.append(test.record(hidden, test.portals(hidden, cert[new, 0], cert[new, 1], 4 * rnd),
                                     visible, cert))
        fresh = torch.zeros_like(visible)
        fresh[new] = True
        front = edge_neighbours_of(visible, partners) & ~visible & test.has_area & ~tried
        near = (front | edge_neighbours_of(fresh, partners)) & ~visible & test.has_area
        ids = torch.nonzero(near).reshape(-1)
        if ids.numel():
            test.fill_certificates(partners[ids], visible, cert, dirs, 4 * rnd + 1)
            newly.append(test.record(ids, test.neighbour_portals(ids, partners, cert, 4 * rnd + 2), visible,
                                     cert))
        ids = torch.nonzero(front & ~visible).reshape(-1)
        if ids.numel():
            tried |= front
            newly.append(test.record(ids, test.fibonacci(ids, DENSE_SAMPLES, dense_dirs, 4 * rnd + 3),
                                     visible, cert))
        new = torch.cat(newly) if newly else ids
        if new.numel() == 0 and not front.any():
            break
    return visible
