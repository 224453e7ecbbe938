"""Geometry stages (paper 5.1, 6): shape prior -> marching cubes -> floaters + QEM -> hidden faces -> UV
atlas + tangents -> normal bake, and the repair of a broken input mesh.

Each stage is a function of its inputs, its typed sub-config and the engine's ``Backends`` (which picked
every operation's implementation once); none of them asks which device it runs on. Each returns a mapping
of its declared outputs plus a ``_note`` for ``--timings``.
"""

from __future__ import annotations

from engine.config import GeometryConfig, ShapeConfig, TextureConfig
from engine.geometry.mesh import TriMesh, vertex_normals
from engine.runtime.backends import Backends
from profiling.stage_timer import substep


def shape_prior(prepared, *, shape: ShapeConfig, backends: Backends) -> dict:
    grid = backends.shape_field(prepared.mask, shape.grid_resolution)
    return {"sdf": grid, "_note": f"{shape.grid_resolution}^3 grid"}


def extract(sdf, *, backends: Backends) -> dict:
    dense = backends.extract(sdf)
    return {"dense": dense, "_note": f"{dense.num_faces} faces"}


def simplify(dense, *, geometry: GeometryConfig, backends: Backends, floater_fraction: float) -> dict:
    """Floater removal (parts under ``floater_fraction`` of the surface area; 0 keeps every part), then
    QEM simplification to ``geometry.faces``. Generated meshes use ``geometry.floater_min_fraction``; a
    user's mesh (``process``) ``geometry.input_floater_fraction``, 0 unless asked: its parts are the asset."""
    kept, removed = backends.stage_mesh(dense), 0
    if floater_fraction > 0.0:
        with substep("floaters"):
            kept, removed = backends.floaters(kept, floater_fraction)
    with substep("simplify"):
        low, report = backends.simplify(kept, geometry.faces, geometry.placement)
    note = (f"{removed} floaters removed (parts under {100 * floater_fraction:g} % of the area), "
            if floater_fraction > 0.0 else "every part kept, ")
    note += f"{report.faces_in} -> {report.faces_out} faces"
    warnings = []
    if report.reason:                  # fewer faces than asked, or relaxed guards needed: say why
        note += f"; {report.reason}"
    if report.faces_out < geometry.faces - 1:
        warnings.append(f"the mesh has {report.faces_out} faces, not the {geometry.faces} asked "
                        f"(--faces): {report.reason}")
    if low.meta.get("simplify_stalled_at"):
        note += (f"; the GPU passes stalled at {low.meta['simplify_stalled_at']} faces, the host finished in "
                 f"{low.meta['simplify_host_s']:.3f} s")
    if low.meta.get("simplify_graph_error"):
        note += f"; passes ran without CUDA graphs: {low.meta['simplify_graph_error'][:200]}"
    return {"low": low, "_note": note, "_warnings": warnings}


def hidden_faces(low, *, geometry: GeometryConfig, backends: Backends) -> dict:
    visible, report = backends.hidden_faces(low, geometry.visibility_views, geometry.visibility_resolution,
                                            geometry.hidden_faces)
    removed = report.faces_in - report.faces_out
    return {"visible": visible, "_note": f"{removed} hidden faces removed ({geometry.visibility_views} views "
                                         f"at {geometry.visibility_resolution} px, then "
                                         f"{geometry.hidden_faces.value.replace('_', ' ')}, then the escape "
                                         f"check: {report.verified} kept)"}


def uv_unwrap(visible: TriMesh, *, texture: TextureConfig, unwrapper) -> dict:
    """Atlas + MikkTSpace-convention tangents. ``unwrapper``: the engine's UV unwrapper (its worker pool
    lives across requests)."""
    from engine.geometry.tangents import compute_tangents

    mesh = visible.copy(normals=vertex_normals(visible.vertices, visible.faces))
    with substep("unwrap"):
        unwrapped, report = unwrapper.unwrap(mesh, texture.atlas_size)
    with substep("tangents"):
        unwrapped.tangents = compute_tangents(unwrapped)
    packer = unwrapped.meta.get("uv_packer")
    return {"unwrapped": unwrapped,
            "_note": f"{report.charts} charts, utilisation {100 * report.utilisation:.1f}%"
                     + (f", packer {packer}" if packer else "")}


def normal_bake(unwrapped: TriMesh, dense, *, geometry: GeometryConfig, backends: Backends) -> dict:
    normal_map, report = backends.normal_bake(unwrapped, dense, geometry.normal_map_size,
                                              geometry.bake_max_distance)
    return {"normal_map": normal_map, "_note": f"{geometry.normal_map_size}^2, {report.rejected_distance} "
                                               f"texels beyond the distance filter"}


def repair(source: TriMesh, *, shape: ShapeConfig, backends: Backends) -> dict:
    """Dense geometry for post-processing: the input itself when it is a clean edge-manifold, consistently
    wound mesh; otherwise a watertight remesh of it (paper 5.1), the documented repair."""
    from engine.geometry.mesh import clean_mesh
    from engine.geometry.topology import edge_topology

    dense = clean_mesh(source, weld_tolerance=1e-7 * max(source.diagonal(), 1e-12))
    topo = edge_topology(dense.faces)
    if topo.is_manifold and topo.is_consistently_wound:
        return {"dense": backends.stage_mesh(dense),
                "_note": f"input used as is ({topo.boundary_edges} boundary edges)"}
    return {"dense": backends.watertight(dense, shape.grid_resolution),
            "_note": f"remeshed watertight at {shape.grid_resolution}^3: input had {topo.nonmanifold_edges} "
                     f"non-manifold and {topo.inconsistent_edges} inconsistently wound edges"}
