"""Edge topology of a triangle mesh: manifoldness, boundaries and winding consistency.

Used to decide whether an arbitrary input mesh can go straight into the simplifier or must first be
remeshed through the watertight conversion (``assetgen process`` documents that repair).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EdgeTopology:
    edges: int  # undirected edges
    boundary_edges: int  # used by exactly one face
    nonmanifold_edges: int  # used by three or more faces
    inconsistent_edges: int  # manifold interior edges whose two faces traverse it in the same direction

    @property
    def is_manifold(self) -> bool:
        return self.nonmanifold_edges == 0

    @property
    def is_consistently_wound(self) -> bool:
        return self.inconsistent_edges == 0

    @property
    def is_closed(self) -> bool:
        return self.boundary_edges == 0 and self.nonmanifold_edges == 0


def edge_topology(faces: np.ndarray) -> EdgeTopology:
    """Classify the undirected edges of ``faces`` (int [F, 3]) by how many faces use them and how."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    lo, hi = directed.min(axis=1), directed.max(axis=1)
    forward = (directed[:, 0] == lo).astype(np.int64)  # 1 if the face walks lo -> hi
    key = lo * (int(faces.max()) + 1 if faces.size else 1) + hi
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    forward_count = np.bincount(inverse, weights=forward, minlength=counts.size)
    interior = counts == 2
    inconsistent = interior & (forward_count != 1)
    return EdgeTopology(
        edges=int(counts.size),
        boundary_edges=int((counts == 1).sum()),
        nonmanifold_edges=int((counts > 2).sum()),
        inconsistent_edges=int(inconsistent.sum()),
    )
