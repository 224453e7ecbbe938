"""Structured multi-view self-attention of TextureGen (paper 7.2) as a real sparse computation.

The latent grid has S = 1 + K slots of T tokens each: slot 0 is the pinned reference image, slots 1..K
the target views in the order of ``engine.texture.views.camera_rig(K)`` (K = 10: front, front_right,
right, rear_right, rear, rear_left, left, front_left, top, bottom; K = 6: front, right, rear, left, top,
bottom). Paper 7.2: "Cardinal side views attend to the reference and their two neighboring views;
diagonal views attend to the reference and neighboring cardinal views; top and bottom views attend to
the reference and all four cardinal views." Read on the ring of side views (45 deg steps for K = 10):
  cardinal side view (azimuth % 90 == 0): itself, the reference, its two ring neighbours (the diagonals
      at +-45 deg for K = 10; the cardinals at +-90 deg for K = 6, which have no diagonals);
  diagonal side view: itself, the reference, the cardinals at +-45 deg;
  top / bottom: itself, the reference, the four cardinals (top and bottom do not see each other);
  reference (our choice; the paper does not say): itself only. It is a fixed appearance anchor: its
      features then never depend on the noisy views, so the conditional and white-reference branches of
      CFG differ only through what the views read from it.
Every view also attends to its own tokens (the paper lists the other slots a view sees).

Computation: slots with the same number of context slots form a group (K = 10: the reference [1 slot],
the 8 side views [4 slots], top/bottom [6 slots]); for each group the K/V of each member's context slots
are gathered into one dense block [B*G, H, C*T, Dh] and one fused SDPA call runs (cuDNN on CUDA via
``engine.models.attention``). No dense (S*T)^2 mask is ever built except by the reference
``multiview_attention_ref`` used in tests.

Layouts: q, k, v [B, S, T, H, Dh] (token-major, as the QKV projection produces them; any strides);
returns [B, S, T, H, Dh] contiguous. FLOPs: sum over slots of 4 * B * H * T * (C_s * T) * Dh.
K = 10 at 1024 px (T = 4096): context slots 1 + 8*4 + 2*6 = 45 of the dense 11*11 = 121, i.e. 2.69x fewer
attention FLOPs; a target view's context is 4.4 slots on average (18,022 tokens) against 45,056 for full
attention (2.5x; the paper says "roughly 4x", which matches counting only the other slots a side view
reads: 3 slots vs 11 = 3.7x).
Extra memory traffic: the gathered K/V (K = 10: 45 slots * T * H * Dh per tensor per batch item).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import ConfigError
from engine.models.attention import attention, attention_flops
from engine.texture.views import camera_rig


def slot_names(num_views: int = 10) -> tuple[str, ...]:
    """Names of the S = 1 + K slots: 'reference' then the rig's view names in rig order."""
    return ("reference",) + tuple(cam.name for cam in camera_rig(num_views))


def context_table(num_views: int = 10) -> tuple[tuple[int, ...], ...]:
    """Per slot s (0 = reference), the sorted slot indices its queries attend to (itself included)."""
    names = slot_names(num_views)
    n_side = num_views - 2
    step = 360 // n_side
    side_slot = {az: 1 + i for i, az in enumerate(range(0, 360, step))}   # azimuth -> slot
    cardinals = [side_slot[az] for az in (0, 90, 180, 270)]
    table: list[tuple[int, ...]] = [(0,)]
    for az, s in side_slot.items():
        # cardinal: its two ring neighbours (the diagonals; the cardinals at +-90 deg when K = 6);
        # diagonal: its two ring neighbours, which are the cardinals beside it
        nbrs = [side_slot[(az - step) % 360], side_slot[(az + step) % 360]]
        if az % 90 != 0 and any(n not in cardinals for n in nbrs):
            raise ConfigError(f"view '{names[s]}' has a non-cardinal neighbour", "use 6 or 10 views")
        table.append(tuple(sorted({0, s, *nbrs})))
    for s in (num_views - 1, num_views):   # slots of top, bottom
        table.append(tuple(sorted({0, s, *cardinals})))
    return tuple(table)


def dense_mask(table: tuple[tuple[int, ...], ...], tokens_per_slot: int,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean [S*T, S*T] mask (True = may attend) equivalent to ``table``; for tests and FLOP counts."""
    s = len(table)
    slot_mask = torch.zeros(s, s, dtype=torch.bool, device=device)
    for i, ctx in enumerate(table):
        slot_mask[i, list(ctx)] = True
    return slot_mask.repeat_interleave(tokens_per_slot, 0).repeat_interleave(tokens_per_slot, 1)


@dataclass(frozen=True)
class SlotGroup:
    """Query slots sharing one context size. ``context[g]`` lists the slots query slot ``slots[g]`` reads."""

    slots: tuple[int, ...]
    context: tuple[tuple[int, ...], ...]


def group_slots(table: tuple[tuple[int, ...], ...]) -> tuple[SlotGroup, ...]:
    """Group slots by context size, groups ordered by their first slot."""
    by_size: dict[int, list[int]] = {}
    for s, ctx in enumerate(table):
        by_size.setdefault(len(ctx), []).append(s)
    groups = [SlotGroup(tuple(ss), tuple(table[s] for s in ss)) for ss in by_size.values()]
    return tuple(sorted(groups, key=lambda g: g.slots[0]))


class MultiViewAttentionPlan:
    """Index tensors of the sparse pattern on one device, built once per model (not per step)."""

    def __init__(self, num_views: int = 10, device: torch.device | str = "cpu") -> None:
        self.num_views = num_views
        self.table = context_table(num_views)
        self.groups = group_slots(self.table)
        self.num_slots = len(self.table)
        self.device = torch.device(device)
        self.ctx_index = [torch.tensor([s for ctx in g.context for s in ctx], dtype=torch.long,
                                       device=self.device) for g in self.groups]          # [G*C]
        self.q_ranges = [self._as_range(g.slots) for g in self.groups]
        self.q_index = [torch.tensor(g.slots, dtype=torch.long, device=self.device) for g in self.groups]
        order = [s for g in self.groups for s in g.slots]
        self.identity_order = order == list(range(self.num_slots))
        inverse = [order.index(s) for s in range(self.num_slots)]
        self.inverse = torch.tensor(inverse, dtype=torch.long, device=self.device)          # [S]

    @staticmethod
    def _as_range(slots: tuple[int, ...]) -> tuple[int, int] | None:
        return (slots[0], len(slots)) if list(slots) == list(range(slots[0], slots[-1] + 1)) else None

    def to(self, device: torch.device | str) -> MultiViewAttentionPlan:
        return self if torch.device(device) == self.device else MultiViewAttentionPlan(self.num_views, device)

    def context_slots(self) -> int:
        """Sum over query slots of the number of context slots (dense attention: S * S)."""
        return sum(len(c) for c in self.table)


def multiview_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        plan: MultiViewAttentionPlan) -> torch.Tensor:
    """Sparse multi-view attention. q, k, v [B, S, T, H, Dh] -> [B, S, T, H, Dh] (see module docstring)."""
    b, s, t, h, dh = q.shape
    if s != plan.num_slots or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"multiview_attention expects q, k, v [B, {plan.num_slots}, T, H, Dh] alike, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    outs = []
    for group, ctx_idx, q_rng, q_idx in zip(plan.groups, plan.ctx_index, plan.q_ranges, plan.q_index,
                                            strict=True):
        g, c = len(group.slots), len(group.context[0])
        qg = q.narrow(1, *q_rng) if q_rng is not None else q.index_select(1, q_idx)   # [B, G, T, H, Dh]
        qg = qg.reshape(b * g, t, h, dh).transpose(1, 2)                               # [B*G, H, T, Dh]
        kg = k.index_select(1, ctx_idx).reshape(b * g, c * t, h, dh).transpose(1, 2)  # [B*G, H, C*T, Dh]
        vg = v.index_select(1, ctx_idx).reshape(b * g, c * t, h, dh).transpose(1, 2)
        og = attention(qg, kg, vg)                                                     # [B*G, H, T, Dh]
        outs.append(og.transpose(1, 2).reshape(b, g, t, h, dh))
    out = torch.cat(outs, dim=1)                                                       # [B, S, T, H, Dh]
    return out if plan.identity_order else out.index_select(1, plan.inverse)


def multiview_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            table: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """Dense masked reference of ``multiview_attention`` (same layouts); O((S*T)^2) memory: tests only."""
    b, s, t, h, dh = q.shape
    mask = dense_mask(table, t, q.device)                                              # [S*T, S*T]
    qd, kd, vd = (x.reshape(b, s * t, h, dh).transpose(1, 2) for x in (q, k, v))      # [B, H, S*T, Dh]
    out = attention(qd, kd, vd, mask=mask[None, None])
    return out.transpose(1, 2).reshape(b, s, t, h, dh)


def multiview_attention_flops(batch: int, heads: int, tokens_per_slot: int, head_dim: int,
                              table: tuple[tuple[int, ...], ...]) -> int:
    """FLOPs of one sparse call (multiply-add = 2)."""
    return sum(attention_flops(batch, heads, tokens_per_slot, len(ctx) * tokens_per_slot, head_dim)
               for ctx in table)


def dense_multiview_attention_flops(batch: int, heads: int, tokens_per_slot: int, head_dim: int,
                                    num_slots: int) -> int:
    """FLOPs of full attention over the whole grid, the alternative the sparse pattern replaces."""
    n = num_slots * tokens_per_slot
    return attention_flops(batch, heads, n, n, head_dim)
