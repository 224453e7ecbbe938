"""Triangle rasterisation on the host: UV-space coverage and orthographic z-buffered views (numba, CPU).

The code lives in ``triton_kernels/rasterize_host.py`` (its docstring states the maths, layouts and
conventions): it is both the engine's CPU rasteriser and the reference of the GPU rasterisers, and kernels
never import from ``engine/``. This module keeps the engine's names.
"""

from __future__ import annotations

from triton_kernels.rasterize_host import interpolate as interpolate
from triton_kernels.rasterize_host import rasterize_ortho as rasterize_ortho
from triton_kernels.rasterize_host import rasterize_points_ref as rasterize_points_ref
from triton_kernels.rasterize_host import rasterize_uv as rasterize_uv
from triton_kernels.rasterize_host import rasterize_uv_ref as rasterize_uv_ref
