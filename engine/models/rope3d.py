"""3D rotary position tables for the MeshGen refine DiT (paper 5.2: token positions are RoPE inputs).

Each refine token sits at a voxel of the coarse surface, position p = (x, y, z) in voxel units. The head
dimension Dh is used as Dh / 2 rotation pairs (rotate-half convention of ``dit_layers.apply_rope``: pair
i couples channels i and i + Dh / 2). The pairs are split over the three axes as evenly as possible
(Dh = 128: 22 / 21 / 21 pairs for x / y / z); within an axis with n pairs, pair j rotates by
p_axis * theta ** (-j / n), the 1-D RoPE of Su et al. applied per axis (the axial layout used by
LATTICE-style refiners; written here from the maths).

Tables are built once per request (positions do not change between denoising steps):
  cos, sin: [N, Dh] in the requested dtype on the positions' device.
Memory: 2 * N * Dh values (N = 16384, Dh = 128, bf16: 8 MiB).
"""

from __future__ import annotations

import torch


def axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """Rotation pairs per axis (x, y, z) for an even ``head_dim``: Dh / 2 split as evenly as possible."""
    if head_dim % 2 != 0 or head_dim < 6:
        raise ValueError(f"3D RoPE needs an even head dim >= 6, got {head_dim}")
    pairs = head_dim // 2
    base, extra = divmod(pairs, 3)
    return tuple(base + (1 if a < extra else 0) for a in range(3))  # type: ignore[return-value]


def rope3d_angles(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """positions [N, 3] (voxel units, any float/int dtype) -> rotation angles [N, Dh / 2] fp32."""
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be [N, 3], got {tuple(positions.shape)}")
    pos = positions.float()
    parts = []
    for axis, n in enumerate(axis_pairs(head_dim)):
        freqs = theta ** (-torch.arange(n, device=pos.device, dtype=torch.float32) / n)  # [n]
        parts.append(pos[:, axis, None] * freqs[None, :])  # [N, n]
    return torch.cat(parts, dim=-1)


def rope3d_tables(positions: torch.Tensor, head_dim: int, theta: float = 10000.0,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each [N, Dh] in ``dtype``, for ``dit_layers.apply_rope``; built once per request."""
    ang = rope3d_angles(positions, head_dim, theta)  # [N, Dh/2]
    ang = torch.cat([ang, ang], dim=-1)  # [N, Dh]: pair i -> channels i and i + Dh/2
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def rope3d_ref(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Reference: rotate each pair (x_i, x_{i+Dh/2}) of x [B, H, N, Dh] by its angle as a complex
    multiplication; equals ``apply_rope(x, *rope3d_tables(positions, Dh, theta))``."""
    dh = x.shape[-1]
    ang = rope3d_angles(positions, dh, theta)  # [N, Dh/2]
    z = torch.complex(x[..., : dh // 2].double(), x[..., dh // 2:].double())
    z = z * torch.polar(torch.ones_like(ang, dtype=torch.float64), ang.double())
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)
