"""The QEM simplifier's collapse guards, their relaxation levels and its budget messages
(``engine.geometry.simplify``; its module docstring's "Budget guarantee" states the policy).

A collapse (a, b) -> p is valid at a guard level (turn_cos, min_quality, fallbacks, fold_cos, max ring)
when, over the faces around a or b that survive it (``_ring``, ``_guards_ok``; these functions live in
``triton_kernels.qem_host`` with the constants ``FOLD_COS`` and ``FALLBACK_MAX_RING``, since the GPU
passes of ``triton_kernels.qem_collapse`` apply the first level, ``STRICT_GUARDS``, too):
  * none turns by more than acos(turn_cos), and none ends with quality 4 sqrt(3) area / sum(edge^2)
    below ``min_quality`` while it was better before (at the strict thresholds this is
    ``triton_kernels.qem_host._faces_ok``);
  * none newly folds against an edge neighbour (``_folds_ok``, when fold_cos >= -1): the dot of their
    unit normals may not drop below fold_cos, or, where an input crease already is below it, not drop
    further. The turn limit bounds one collapse; over several collapses a face can turn over in steps
    of < 60 degrees and lie folded flat on its neighbours, its back showing.
With fallback placements, a collapse whose QEM placement fails may use the cheapest (by quadric energy) of
its two endpoints and its midpoint that passes (``_valid_placement``); an edge with a fixed endpoint always
goes to that endpoint. The greedy order stays the energy order: the simplifier puts such an edge back
into its heap at the fallback's (higher) energy and collapses it when it comes up again. A fallback is
refused where the survivor would be left with more than ``FALLBACK_MAX_RING`` faces around it: on flat
regions (singular quadrics, every energy 0) the endpoints win every tie and fans grew to ~50 faces a
vertex, which made every later check there slow (texcoordtest at 256^3 -> 5K faces: 44 s, 5 s with the
cap; 4.8 s before fallbacks existed; bunny and bob at 512^3 still reach 5K at the first level).

Why fallbacks from the first level (issue 14): with the QEM point only (``QEM_POINT_ONLY``, the rule
before), a cheap collapse whose optimum would fold a face was skipped outright; on dense marching-cubes
meshes the greedy order then leaves high-valence sliver fans behind and spends its budget on costlier
collapses elsewhere, until nothing is valid: the 512^3 bunny (1.6M faces) stalled at 5938 faces for a
5000 budget, at Chamfer 350e-5 / Hausdorff 46e-3 (MeshLab at 5000: 76 / 8.5). Falling back to the
endpoints or the midpoint of such edges reaches 5000 at Chamfer 49e-5 / Hausdorff 4.1e-3
(benchmarks/results/simplify_budget_cpu.md). Why the fold guard: with the fallback points and no fold
guard, one folded face showed its back on the 256^3 bunny at 5K faces (6 flipped-normal pixels over 24
views at 256 px, MeshLab 0) and 11 on trellis_T (161 px); with it, 0 on both.
"""

from __future__ import annotations

import numpy as np

from engine.errors import ConfigError
from engine.geometry.simplify_topology import FaceFloor
from triton_kernels.qem_host import MAX_TURN_COS, MIN_QUALITY, NO_FOLD_GUARD, STRICT_GUARDS

# Guard levels (turn_cos, min_quality, fallback placements 0/1, fold_cos, fallback max ring), tried in order
# while stalled. The first is ``qem_host.STRICT_GUARDS``, the GPU passes' guards too.
GUARD_LEVELS = np.array([STRICT_GUARDS,
                         [0.0, 1e-3, 1.0, NO_FOLD_GUARD, np.inf],
                         [-0.5, 1e-5, 1.0, NO_FOLD_GUARD, np.inf]])
GUARD_NAMES = ("60-degree turn, quality 0.01, no new fold (endpoint or midpoint where the QEM point fails)",
               "faces may turn up to 90 degrees, quality floor 1e-3, folds allowed",
               "faces may turn up to 120 degrees, quality floor 1e-5, folds allowed")
# The rule before issue 14 (and of the GPU passes' candidates until issue 14.5): strict guards on the QEM
# point only (the benchmarks' "before" column).
QEM_POINT_ONLY = np.array([[MAX_TURN_COS, MIN_QUALITY, 0.0, NO_FOLD_GUARD, np.inf]])


def budget_reason(faces_in: int, faces_clean: int, faces_out: int, target: int, level: int) -> str:
    """Why a simplification result has fewer faces than ``target``, and which relaxed guard level it
    needed ("" for an exact hit at the strict guards)."""
    bits = []
    if faces_in <= target:
        bits.append(f"the input has {faces_in} faces, within the budget: returned unchanged")
    elif faces_clean <= target:
        bits.append(f"{faces_clean} faces after welding and dropping degenerate/duplicate faces, "
                    "within the budget")
    elif faces_out == target - 1:
        bits.append("one face under the budget: every collapse removes 2 faces")
    if level > 0:
        bits.append(f"reached with relaxed guards: {GUARD_NAMES[level]}")
    return "; ".join(bits)


def unreachable_budget(target: int, faces_out: int, floor: FaceFloor) -> ConfigError:
    """The one-line error for a budget that no valid collapse sequence reaches."""
    need = max(faces_out, floor.faces)
    return ConfigError(f"face budget {target} (--faces) is below the fewest faces this mesh simplifies to "
                       f"without breaking it: {need} (its topology alone needs >= {floor.faces}: "
                       f"{floor.describe()})", f"use --faces {need} or more")
