"""Harmonic (Laplace) fill of the texels no view saw (issue 14 item 2; paper 7.4, "Inpainting").

The k-nearest-texel stage of ``inpaint_3d`` fills the uncovered band around the silhouette front by
front, which leaves flat patches of unrelated colours. This stage replaces its values (and the UV-ring
values) on every unobserved texel by the solution of the discrete Laplace equation on a graph that
follows the surface, with the observed texels as Dirichlet boundary values:

    for every unknown texel i:   sum_{j ~ i} (c_i - c_j) = 0,   i.e.  c_i = mean of its graph neighbours,

the smoothest colouring (least Dirichlet energy sum_{i~j} |c_i - c_j|^2) that keeps every observed texel.

Graph (unit weights, flat texel index r * W + c):
  * in-chart links: 4-neighbours in the atlas that are both valid and lie closer than ``gate`` texel
    widths on the surface (3D), so no link crosses a chart border that happens to touch in UV;
  * seam links: chart-border texels (fewer than 4 in-chart links) joined to every border texel of
    another chart (connected component of the in-chart links) closer than ``seam_radius`` texel widths
    in 3D (one KD-tree pair query), so colour flows across UV seams as it would over the surface.
Only links touching an unknown texel matter. Unknown texels whose graph component holds no observed
texel keep their input (k-nearest) colour; so do isolated ones.

Solver: conjugate gradients with a Jacobi (degree) preconditioner on the SPD system
L_uu c_u = W_uk c_k, all channels at once (channel-major [C, M], per-channel step sizes), started from
the k-nearest fill, stopped when every unknown texel is within ``tol`` of its neighbours' mean (colour
in [0, 1]; |z| = |r| / degree) or after ``max_iter`` iterations; float32 throughout. Cost per
iteration: C sparse products with ~5 nnz per row, ~10 elementwise passes over [C, M]; measured on
2 CPU cores: ~10 s for 824K unknown texels of a 1024^2 box atlas (96-155 iterations).

The GPU fusion (``engine.texture.fusion_gpu``) runs the torch twin ``engine.texture.harmonic_fill_gpu``
(same graph, solver and stopping rule; this function is its parity reference).
"""

from __future__ import annotations

import numpy as np

HARMONIC_TOL = 1e-3
HARMONIC_MAX_ITER = 400


def chart_links(valid: np.ndarray, position: np.ndarray, max_dist: float) -> np.ndarray:
    """In-chart 4-neighbour links int64 [E, 2] (flat indices a < b): both valid, 3D gap < max_dist."""
    h, w = valid.shape
    idx = np.arange(h * w, dtype=np.int64).reshape(h, w)
    out = []
    for a, b in (((slice(None), slice(0, -1)), (slice(None), slice(1, None))),
                 ((slice(0, -1), slice(None)), (slice(1, None), slice(None)))):
        ok = valid[a] & valid[b]
        ok &= np.linalg.norm(position[a] - position[b], axis=-1) < max_dist
        out.append(np.stack([idx[a][ok], idx[b][ok]], axis=1))
    return np.concatenate(out)


def surface_graph(valid: np.ndarray, position: np.ndarray, delta: float, gate: float = 3.0,
                  seam_radius: float = 2.0) -> np.ndarray:
    """Links int64 [E, 2] (a < b, each once) of the surface graph (module docstring). valid bool [H, W],
    position float32 [H, W, 3] world, delta: one texel width on the surface (world units)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = valid.size
    links = chart_links(valid, position, gate * delta)
    degree = np.bincount(links.ravel(), minlength=n)
    border = np.flatnonzero(valid.ravel() & (degree < 4))
    if border.size > 1:
        ones = np.ones(len(links), np.int8)
        _, chart = connected_components(sp.coo_matrix((ones, (links[:, 0], links[:, 1])), shape=(n, n)),
                                        directed=False)                      # chart label per texel
        tree = cKDTree(position.reshape(-1, 3)[border])
        pairs = border[tree.query_pairs(seam_radius * delta, output_type="ndarray")]   # [P, 2]
        seam = np.sort(pairs[chart[pairs[:, 0]] != chart[pairs[:, 1]]], axis=1)
        links = np.concatenate([links, seam])
    return links


def _block_cg(a, b: np.ndarray, x: np.ndarray, diag: np.ndarray, tol: float, max_iter: int,
              check_every: int = 8) -> tuple[np.ndarray, int]:
    """Jacobi-preconditioned CG for SPD ``a`` (sparse [M, M]) on C right-hand sides b [C, M] at once
    (channel-major, per-channel step sizes), from x [C, M]; stops when max |r_i| / diag_i <= tol
    (checked every ``check_every`` iterations). Returns (x, iterations)."""
    inv = (1.0 / diag).astype(x.dtype)
    mul = lambda v: np.stack([a @ c for c in v])                              # noqa: E731  [C, M]
    r = b - mul(x)
    z = inv * r
    p = z.copy()
    rz = np.einsum("cm,cm->c", r, z)[:, None]
    for it in range(max_iter):
        if it % check_every == 0 and np.abs(z).max() <= tol:
            return x, it
        ap = mul(p)
        step = rz / np.maximum(np.einsum("cm,cm->c", p, ap)[:, None], 1e-30)
        x += step * p
        r -= step * ap
        np.multiply(inv, r, out=z)
        rz_new = np.einsum("cm,cm->c", r, z)[:, None]
        p *= rz_new / np.maximum(rz, 1e-30)
        p += z
        rz = rz_new
    return x, max_iter


def harmonic_fill(atlas: np.ndarray, known: np.ndarray, valid: np.ndarray, position: np.ndarray,
                  delta: float, tol: float = HARMONIC_TOL, max_iter: int = HARMONIC_MAX_ITER,
                  stats: dict | None = None) -> np.ndarray:
    """Harmonic fill of ``valid & ~known`` (module docstring).

    atlas:    float32 [H, W, C]; values at known texels are the boundary, at unknown ones the start.
    known:    bool [H, W] observed texels (kept exactly). valid: bool [H, W] texels on the surface.
    position: float32 [H, W, 3] world; delta: one texel width on the surface (world units).
    Returns a new float32 [H, W, C] atlas; ``stats`` gets harmonic_texels / _iterations / _kept.
    """
    import scipy.sparse as sp

    out = np.array(atlas, dtype=np.float32, copy=True)
    st = stats if stats is not None else {}
    unknown = (valid & ~known).ravel()
    st.update(harmonic_texels=0, harmonic_iterations=0, harmonic_kept=int(unknown.sum()))
    if not unknown.any() or not (valid & known).any():
        return out
    u, a_u = _system(known, valid, position, delta)
    st["harmonic_kept"] = int(unknown.sum() - u.size)
    if u.size == 0:
        return out
    n = valid.size
    flat = out.reshape(n, -1)                                                 # [N, C] view
    degree = np.asarray(a_u.sum(1)).ravel()
    a_uu = sp.diags(degree) - a_u[:, u]                                       # L_uu, SPD per component
    fixed = np.ones(n, bool)
    fixed[u] = False
    b = a_u[:, fixed] @ flat[fixed]                                           # W_uk c_k  [M, C]
    x, iters = _block_cg(a_uu.tocsr().astype(np.float32), np.ascontiguousarray(b.T, np.float32),
                         np.ascontiguousarray(flat[u].T), degree, tol, max_iter)
    flat[u] = x.T
    st.update(harmonic_texels=int(u.size), harmonic_iterations=iters)
    return out


def _system(known: np.ndarray, valid: np.ndarray, position: np.ndarray, delta: float):
    """The texels the fill solves for and their graph rows: (u int64 [M] flat indices of the unknown
    texels reachable from a known one, a_u float32 CSR [M, N] their rows of the surface graph's
    adjacency over the links touching an unknown texel)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    unknown = (valid & ~known).ravel()
    links = surface_graph(valid, position, delta)
    links = links[unknown[links].any(1)]                                      # [E, 2] touching an unknown
    n = valid.size
    adj = sp.coo_matrix((np.ones(2 * len(links), np.float32), (links.ravel(), links[:, ::-1].ravel())),
                        shape=(n, n)).tocsr()
    _, comp = connected_components(adj, directed=False)
    lit = np.zeros(comp.max() + 1, bool)
    lit[comp[known.ravel() & valid.ravel()]] = True
    u = np.flatnonzero(unknown & lit[comp] & (np.diff(adj.indptr) > 0))     # reachable from a known texel
    return u, adj[u]


def stopping_residual(filled: np.ndarray, known: np.ndarray, valid: np.ndarray, position: np.ndarray,
                      delta: float) -> float:
    """The quantity the fill's stopping rule bounds by ``tol``, in float64: max over the solved texels of
    |(W_uk c_k - L_uu c_u)_i| / degree_i, i.e. how far a texel of ``filled`` (float [H, W, C]) is from
    its graph neighbours' mean; 0.0 when nothing is solved."""
    if not (valid & ~known).any() or not (valid & known).any():
        return 0.0
    u, a_u = _system(known, valid, position, delta)
    if u.size == 0:
        return 0.0
    x = filled.reshape(valid.size, -1).astype(np.float64)
    degree = np.asarray(a_u.sum(1), np.float64).ravel()[:, None]
    return float((np.abs(a_u @ x - degree * x[u]) / degree).max())


def fill_smoothness(atlas: np.ndarray, filled: np.ndarray, valid: np.ndarray, position: np.ndarray,
                    delta: float, jump: float = 10.0) -> dict:
    """Smoothness of the filled region: over in-chart links (``chart_links``, gate 3 texel widths) with
    at least one ``filled`` end, the mean and root-mean-square colour step |c_a - c_b| (RGB L2, 0..255
    units; flat patches have small mean and large RMS steps) and the share of steps above ``jump`` (the
    edges of flat patches). atlas float [H, W, C] in [0, 1]."""
    links = chart_links(valid, position, 3.0 * delta)
    links = links[filled.ravel()[links].any(1)]
    if len(links) == 0:
        return {"fill_gradient": 0.0, "fill_rms": 0.0, "fill_jumps": 0.0}
    flat = atlas.reshape(valid.size, -1).astype(np.float32) * 255.0
    step = np.linalg.norm(flat[links[:, 0]] - flat[links[:, 1]], axis=1)
    return {"fill_gradient": float(step.mean()), "fill_rms": float(np.sqrt((step**2).mean())),
            "fill_jumps": float((step > jump).mean())}
