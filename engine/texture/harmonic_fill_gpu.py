"""Harmonic (Laplace) fill on the device: the torch twin of ``engine.texture.harmonic_fill`` (its docstring
is the specification, ``harmonic_fill`` the reference of the parity tests). Plain torch ops, so the same
code runs on CUDA tensors in the GPU fusion and on CPU tensors in the tests.

Split by dependency like ``inpaint_gpu`` (paper 8.2): which texels are observed, the texel positions and
the graph depend only on the mesh and the rig, so the system is planned ahead; the colours only enter
the right-hand side and the start.
  ``plan_harmonic``  (mesh-only): surface graph (``surface_graph_gpu``), the links touching an unknown
                     texel, connected components of the unknown-unknown links (``_components``: min-label
                     hooking + pointer jumping) to drop the unknown texels no observed texel reaches (they
                     keep their k-nearest colour, as in the reference), and L_uu of the rest as a sparse
                     CSR matrix [M, M] (degree on the diagonal, -1 per link) -> ``HarmonicPlan``.
  ``apply_harmonic`` (colour-dependent): b = W_uk c_k (one index_add), then Jacobi-preconditioned CG
                     on L_uu c_u = b for all channels at once ([M, C], per-channel step sizes, float32),
                     from the k-nearest fill; stops when every unknown texel is within ``tol`` of its
                     neighbours' mean (max |r_i| / degree_i <= tol, checked every ``check_every``
                     iterations: the only host sync of the loop, as in the reference) or at ``max_iter``.

Seam links (chart-border texels of different charts within ``seam_radius`` texel widths in 3D, the
reference's KD-tree pair query): a uniform grid of cell = radius over the border texels, keys sorted once,
the 27 neighbour cells of each texel found by ``searchsorted`` and the candidate pairs expanded with
``repeat_interleave`` (float64 distances, <= radius as ``cKDTree.query_pairs``).

Layouts: atlas float32 [H, W, C]; known, valid bool [H, W]; position float32 [H, W, 3] world; all on one
device. Plan tensors index the flattened atlas (r * W + c). Host syncs: a few dozen in the plan (counts,
components rounds, pair totals), one per ``check_every`` CG iterations and the stats counts in the apply.
Parity with the numpy reference: the same graph (up to float32 rounding of distances at the gate / radius),
the same iteration and stopping rule; colours agree to ~1e-5 (float32 summation order).
Measured (``benchmarks/texture/harmonic_fill_gpu.py``, the crate's weight-free fill: 1024^2, 175691 unseen
texels, 88 iterations) on CPU tensors, shared 2-core CPU: plan 0.21 s + apply 0.23 s with 2 threads
(0.35 + 0.38 s with 1) vs 0.46-0.49 s for the numpy reference. Not yet timed on a GPU.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from engine.errors import ConfigError
from engine.texture.harmonic_fill import HARMONIC_MAX_ITER, HARMONIC_TOL

_CELL_OFFSETS = [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)]


@dataclass(frozen=True)
class HarmonicPlan:
    """Mesh-only part of the harmonic fill (module docstring).

    solve: int64 [M] flat texel indices of the unknown texels solved for; matrix: L_uu, float32 sparse
    CSR [M, M]; degree: float32 [M] its diagonal; bound_rows int64 [B] (row in [0, M)) and bound_cols
    int64 [B] (flat texel index of an observed texel): the links of W_uk; stats: harmonic_kept (unknown
    texels left at their start colour) and the graph sizes."""

    solve: torch.Tensor
    matrix: torch.Tensor | None
    degree: torch.Tensor
    bound_rows: torch.Tensor
    bound_cols: torch.Tensor
    stats: dict = field(default_factory=dict)


def chart_links_gpu(valid: torch.Tensor, position: torch.Tensor, max_dist: float) -> torch.Tensor:
    """In-chart 4-neighbour links int64 [E, 2] (flat indices a < b): both valid, 3D gap < max_dist
    (``harmonic_fill.chart_links``)."""
    h, w = valid.shape
    idx = torch.arange(h * w, device=valid.device).view(h, w)
    out = []
    for a, b in (((slice(None), slice(0, -1)), (slice(None), slice(1, None))),
                 ((slice(0, -1), slice(None)), (slice(1, None), slice(None)))):
        ok = valid[a] & valid[b] & ((position[a] - position[b]).norm(dim=-1) < max_dist)
        out.append(torch.stack([idx[a][ok], idx[b][ok]], dim=1))
    return torch.cat(out)


def _components(n: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int64 [n]: smallest node id of each node's connected component over the links a[i] - b[i].
    Every round hooks each star's root under the smallest root among its neighbours' (scatter amin; roots
    only ever decrease, so no cycles), then jumps pointers until every node holds its root. One host sync
    per jump; a handful of rounds on surface graphs."""
    label = torch.arange(n, device=a.device)
    while True:
        la, lb = label[a], label[b]
        low = torch.minimum(la, lb)
        hooked = label.clone()
        hooked.scatter_reduce_(0, la, low, "amin")
        hooked.scatter_reduce_(0, lb, low, "amin")
        while True:
            jumped = hooked[hooked]
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, label):
            return label
        label = hooked


def _chart_labels(valid: torch.Tensor, links: torch.Tensor) -> torch.Tensor:
    """int64 [N]: chart (component of the in-chart links) of every valid texel, as the smallest compact
    valid index in it (-1 off the charts); components over the valid texels only."""
    cidx = torch.full(valid.shape, -1, dtype=torch.int64, device=valid.device)
    cidx[valid] = torch.arange(int(valid.sum()), device=valid.device)
    local = cidx[links]                                                           # [E, 2] compact
    label = torch.full_like(cidx, -1)
    label[valid] = _components(int(valid.sum()), local[:, 0], local[:, 1])
    return label


def _pairs_within(points: torch.Tensor, radius: float) -> torch.Tensor:
    """int64 [P, 2]: every pair i < j of points (float [B, 3]) at distance <= radius (float64)."""
    p = points.double()
    cell = torch.floor((p - p.min(0).values) / radius).long() + 1                 # [B, 3], >= 1
    span = (cell.max(0).values + 2).tolist()                                      # host sync
    if span[0] * span[1] * span[2] >= 2**62:
        raise ConfigError(f"seam grid of {span} cells overflows int64 keys",
                          "check the texel width delta (one texel on the surface, world units)")
    stride = torch.tensor([span[1] * span[2], span[2], 1], device=p.device)
    key = (cell * stride).sum(1)                                                  # [B]
    order = torch.argsort(key)
    sorted_key = key[order]
    offs = (torch.tensor(_CELL_OFFSETS, device=p.device) * stride).sum(1)        # [27] (no int mm on CUDA)
    nkey = key[:, None] + offs[None, :]                                           # [B, 27]
    start = torch.searchsorted(sorted_key, nkey)
    count = (torch.searchsorted(sorted_key, nkey, right=True) - start).view(-1)   # [B 27]
    total = int(count.sum())                                                      # host sync
    first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count, output_size=total)
    i = torch.repeat_interleave(torch.arange(len(p), device=p.device).repeat_interleave(len(offs)), count,
                                output_size=total)                                # [T]
    j = order[torch.repeat_interleave(start.view(-1), count, output_size=total)
              + torch.arange(total, device=p.device) - first]                     # [T]
    keep = (i < j) & ((p[i] - p[j]).norm(dim=1) <= radius)
    return torch.stack([i[keep], j[keep]], dim=1)


def surface_graph_gpu(valid: torch.Tensor, position: torch.Tensor, delta: float, gate: float = 3.0,
                      seam_radius: float = 2.0) -> torch.Tensor:
    """Links int64 [E, 2] (a < b, each once) of the surface graph (``harmonic_fill.surface_graph``):
    in-chart links plus seam links between border texels of different charts. valid bool [H, W],
    position float32 [H, W, 3] world, delta: one texel width on the surface (world units)."""
    n = valid.numel()
    links = chart_links_gpu(valid, position, gate * delta)
    degree = torch.bincount(links.view(-1), minlength=n)
    border = torch.nonzero(valid.view(-1) & (degree < 4)).view(-1)                 # [B] flat indices
    if border.numel() < 2:
        return links
    chart = _chart_labels(valid.view(-1), links)                                  # [H W]
    pairs = border[_pairs_within(position.reshape(-1, 3)[border], seam_radius * delta)]   # [P, 2]
    seam = pairs[chart[pairs[:, 0]] != chart[pairs[:, 1]]].sort(dim=1).values
    return torch.cat([links, seam])


def _check(known: torch.Tensor, valid: torch.Tensor, position: torch.Tensor) -> None:
    if not isinstance(valid, torch.Tensor) or valid.ndim != 2 or valid.dtype != torch.bool:
        raise ConfigError("valid must be a bool [H, W] tensor", "pass the chart mask of the atlas")
    hw = tuple(valid.shape)
    for name, t, shape, dtype in (("known", known, hw, torch.bool),
                                  ("position", position, hw + (3,), torch.float32)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != dtype:
            raise ConfigError(f"{name} is {getattr(t, 'dtype', type(t))} {tuple(getattr(t, 'shape', ()))}",
                              f"pass {dtype} {shape} (maps of the same atlas)")
        if t.device != valid.device:
            raise ConfigError(f"{name} on {t.device}, valid on {valid.device}", "pass all maps on one device")


def _empty_plan(dev: torch.device, kept: int) -> HarmonicPlan:
    e = torch.zeros(0, dtype=torch.int64, device=dev)
    return HarmonicPlan(e, None, torch.zeros(0, device=dev), e, e, {"harmonic_kept": kept})


def plan_harmonic(known: torch.Tensor, valid: torch.Tensor, position: torch.Tensor, delta: float,
                  gate: float = 3.0, seam_radius: float = 2.0) -> HarmonicPlan:
    """Mesh-only part of the harmonic fill of ``valid & ~known`` (module docstring; maps as there)."""
    _check(known, valid, position)
    n, dev = valid.numel(), valid.device
    unknown = (valid & ~known).view(-1)
    n_unknown = int(unknown.sum())
    if n_unknown == 0 or not bool((valid & known).any()):
        return _empty_plan(dev, n_unknown)
    links = surface_graph_gpu(valid, position, delta, gate, seam_radius)
    ua, ub = unknown[links[:, 0]], unknown[links[:, 1]]
    uidx = torch.full((n,), -1, dtype=torch.int64, device=dev)
    uidx[unknown] = torch.arange(n_unknown, device=dev)                           # compact unknown index
    uu = uidx[links[ua & ub]]                                                      # [E_uu, 2] compact
    uk = links[ua ^ ub]                                                            # one end unknown
    uk_row = uidx[torch.where(ua[ua ^ ub], uk[:, 0], uk[:, 1])]                    # [E_uk] compact
    uk_col = torch.where(ua[ua ^ ub], uk[:, 1], uk[:, 0])                          # [E_uk] flat, known
    comp = _components(n_unknown, uu[:, 0], uu[:, 1])
    lit = torch.zeros(n_unknown, dtype=torch.bool, device=dev)
    lit[comp[uk_row]] = True                                                       # reaches an observed one
    solve = lit[comp]                                                              # [U]
    m = int(solve.sum())
    if m == 0:
        return _empty_plan(dev, n_unknown)
    sidx = torch.full((n_unknown,), -1, dtype=torch.int64, device=dev)
    sidx[solve] = torch.arange(m, device=dev)
    uu = sidx[uu[solve[uu[:, 0]]]]                                                 # both ends solved
    keep = solve[uk_row]
    rows, cols = sidx[uk_row[keep]], uk_col[keep]
    degree = (torch.bincount(uu.view(-1), minlength=m) + torch.bincount(rows, minlength=m)).float()
    matrix = _laplacian_csr(uu, degree)
    flat_unknown = torch.nonzero(unknown).view(-1)
    stats = {"harmonic_kept": n_unknown - m, "harmonic_links": int(len(links))}
    return HarmonicPlan(flat_unknown[solve], matrix, degree, rows, cols, stats)


def _laplacian_csr(links: torch.Tensor, degree: torch.Tensor) -> torch.Tensor:
    """float32 sparse CSR [M, M]: diag(degree) minus the unit adjacency of links int64 [E, 2] (each
    unordered link once, no duplicates), columns sorted within each row."""
    m, dev = len(degree), degree.device
    diag = torch.arange(m, device=dev)
    row = torch.cat([links[:, 0], links[:, 1], diag])
    col = torch.cat([links[:, 1], links[:, 0], diag])
    val = torch.cat([torch.full((2 * len(links),), -1.0, device=dev), degree])
    order = torch.argsort(row * m + col)
    crow = torch.zeros(m + 1, dtype=torch.int64, device=dev)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=m), 0)
    with warnings.catch_warnings():                                # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col[order], val[order], (m, m), check_invariants=False)


def _block_cg(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, diag: torch.Tensor, tol: float,
              max_iter: int, check_every: int) -> tuple[torch.Tensor, int]:
    """Jacobi-preconditioned CG for SPD sparse CSR ``a`` [M, M] on C right-hand sides b [M, C] at once
    (per-channel step sizes), from x [M, C]; stops when max |r_i| / diag_i <= tol, checked every
    ``check_every`` iterations (the reference's ``_block_cg``, texel-major)."""
    inv = (1.0 / diag)[:, None]                                                    # [M, 1]
    r = b - a @ x
    z = inv * r
    p = z.clone()
    rz = (r * z).sum(0)                                                            # [C]
    for it in range(max_iter):
        if it % check_every == 0 and bool(z.abs().max() <= tol):                   # host sync
            return x, it
        ap = a @ p
        step = rz / (p * ap).sum(0).clamp_min(1e-30)                               # [C]
        x.add_(step * p)
        r.sub_(step * ap)
        torch.mul(inv, r, out=z)
        rz_new = (r * z).sum(0)
        p.mul_(rz_new / rz.clamp_min(1e-30)).add_(z)
        rz = rz_new
    return x, max_iter


def apply_harmonic(plan: HarmonicPlan, atlas: torch.Tensor, tol: float = HARMONIC_TOL,
                   max_iter: int = HARMONIC_MAX_ITER, check_every: int = 8) -> tuple[torch.Tensor, dict]:
    """Harmonic fill of the planned texels of float32 [H, W, C] ``atlas`` (observed colours are the
    boundary, the others the start; all finite). Returns a new atlas and stats: harmonic_texels,
    harmonic_iterations, harmonic_kept."""
    if not isinstance(atlas, torch.Tensor) or atlas.ndim != 3 or atlas.dtype != torch.float32:
        raise ConfigError(f"atlas is {getattr(atlas, 'dtype', type(atlas))} "
                          f"{tuple(getattr(atlas, 'shape', ()))}", "pass a float32 [H, W, C] atlas")
    out = atlas.clone()
    stats = {"harmonic_texels": int(plan.solve.numel()), "harmonic_iterations": 0,
             "harmonic_kept": plan.stats["harmonic_kept"]}
    if plan.matrix is None:
        return out, stats
    flat = out.view(-1, out.shape[-1])                                             # [H W, C]
    b = torch.zeros(len(plan.solve), flat.shape[1], device=flat.device)
    b.index_add_(0, plan.bound_rows, flat[plan.bound_cols])                        # W_uk c_k  [M, C]
    x, iters = _block_cg(plan.matrix, b, flat[plan.solve], plan.degree, tol, max_iter, check_every)
    flat[plan.solve] = x
    stats["harmonic_iterations"] = iters
    return out, stats


def harmonic_fill_gpu(atlas: torch.Tensor, known: torch.Tensor, valid: torch.Tensor, position: torch.Tensor,
                      delta: float, tol: float = HARMONIC_TOL, max_iter: int = HARMONIC_MAX_ITER,
                      stats: dict | None = None) -> torch.Tensor:
    """``harmonic_fill`` on torch tensors (plan + apply; arguments and return as the reference's)."""
    out, st = apply_harmonic(plan_harmonic(known & valid, valid, position, delta), atlas, tol, max_iter)
    if stats is not None:
        stats.update(st)
    return out


def fill_smoothness_gpu(atlas: torch.Tensor, filled: torch.Tensor, valid: torch.Tensor,
                        position: torch.Tensor, delta: float, jump: float = 10.0) -> dict:
    """``harmonic_fill.fill_smoothness`` on torch tensors (three host syncs)."""
    links = chart_links_gpu(valid, position, 3.0 * delta)
    links = links[filled.view(-1)[links].any(1)]
    if len(links) == 0:
        return {"fill_gradient": 0.0, "fill_rms": 0.0, "fill_jumps": 0.0}
    flat = atlas.reshape(valid.numel(), -1).float() * 255.0
    step = (flat[links[:, 0]] - flat[links[:, 1]]).norm(dim=1)
    return {"fill_gradient": float(step.mean()), "fill_rms": float(step.square().mean().sqrt()),
            "fill_jumps": float((step > jump).float().mean())}
