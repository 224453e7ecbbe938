"""A signed distance field sampled on a regular cubic lattice.

Convention: NEGATIVE INSIDE. Node ``(i, j, k)`` of ``values[i, j, k]`` sits at world position
``(lo + i * spacing, lo + j * spacing, lo + k * spacing)`` with ``spacing = (hi - lo) / (n - 1)``, i.e. the
array is indexed ``[x, y, z]`` in glTF axes (+Y up, metres or normalised object units).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import ConfigError


@dataclass
class SdfGrid:
    """SDF samples at lattice nodes.

    values: float32 [n, n, n] indexed [x, y, z]; numpy array or torch tensor (cpu or cuda).
    lo, hi: world coordinate of the first and last node on every axis (a cube), ``hi > lo``.
    """

    values: np.ndarray | object
    lo: float
    hi: float

    def __post_init__(self) -> None:
        shape = tuple(self.values.shape)
        if len(shape) != 3 or len(set(shape)) != 1 or shape[0] < 2:
            raise ConfigError(f"SDF grid must be a cubic [n, n, n] array with n >= 2, got shape {shape}",
                              "sample the field on an n x n x n lattice")
        if not float(self.hi) > float(self.lo):
            raise ConfigError(f"SDF grid bounds [{self.lo}, {self.hi}] are empty", "use hi > lo")
        self.lo, self.hi = float(self.lo), float(self.hi)

    @property
    def num_nodes(self) -> int:
        """n, the number of lattice nodes per axis."""
        return int(self.values.shape[0])

    @property
    def resolution(self) -> int:
        """Number of cells per axis (n - 1)."""
        return self.num_nodes - 1

    @property
    def spacing(self) -> float:
        """Distance between neighbouring nodes, world units."""
        return (self.hi - self.lo) / self.resolution

    def node_coords(self) -> np.ndarray:
        """float64 [n] world coordinate of the nodes along any axis."""
        return self.lo + np.arange(self.num_nodes) * self.spacing

    def index_to_world(self, points: np.ndarray) -> np.ndarray:
        """Map float [..., 3] index-unit positions to world positions (float32)."""
        return (self.lo + np.asarray(points, dtype=np.float64) * self.spacing).astype(np.float32)
