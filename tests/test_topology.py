import numpy as np

from engine.geometry.topology import edge_topology

TETRA = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])


def test_closed_consistent_tetrahedron():
    topo = edge_topology(TETRA)
    assert (topo.edges, topo.boundary_edges, topo.nonmanifold_edges, topo.inconsistent_edges) == (6, 0, 0, 0)
    assert topo.is_closed and topo.is_consistently_wound


def test_flipped_face_and_fin_are_detected():
    flipped = TETRA.copy()
    flipped[0] = flipped[0][::-1]
    assert edge_topology(flipped).inconsistent_edges == 3
    fin = np.vstack([TETRA, [[0, 1, 4]]])
    topo = edge_topology(fin)
    assert topo.nonmanifold_edges == 1 and not topo.is_manifold and topo.boundary_edges == 2
