"""The preview renderer (engine/report/render.py) and UV layout (uv_layout.py) on analytic meshes: known
colours lit as the documented model says, the normal map's tangent frame (glTF / MikkTSpace), the wireframe's
edges, and the UV layout's coverage against the numpy reference rasteriser. Small images: ~2 s."""

from __future__ import annotations

import numpy as np
import pytest
from meshes import icosphere

from engine.geometry.mesh import TriMesh
from engine.geometry.rasterize import rasterize_uv_ref
from engine.geometry.tangents import compute_tangents
from engine.report.config import PreviewConfig
from engine.report.render import (
    EDGE_COLOUR,
    linear_to_srgb8,
    orbit_camera,
    prepare_surface,
    render_lit,
    render_wireframe,
    srgb_to_linear,
)
from engine.report.uv_layout import background, chart_colours, chart_ids, uv_layout

COLOUR = (200, 120, 60)
SIZE = 64
# per cube face: (normal, image right R, image up U) with R x U = normal, so each face's chart shows the
# face as seen from outside: u grows along R, glTF v grows along -U
FACES = [((0, 0, 1), (1, 0, 0), (0, 1, 0)), ((0, 0, -1), (-1, 0, 0), (0, 1, 0)),
         ((1, 0, 0), (0, 0, -1), (0, 1, 0)), ((-1, 0, 0), (0, 0, 1), (0, 1, 0)),
         ((0, 1, 0), (1, 0, 0), (0, 0, -1)), ((0, -1, 0), (1, 0, 0), (0, 0, 1))]


def cube(normal_rgb=(128, 128, 255), colour=COLOUR) -> TriMesh:
    """Unit cube, 24 vertices (flat normals), each face its own chart in a 3 x 2 atlas grid, uniform
    base colour and normal map, MikkTSpace tangents."""
    verts, uvs, normals, faces = [], [], [], []
    for k, (n, r, u) in enumerate(FACES):
        n, r, u = (np.array(x, float) for x in (n, r, u))
        cell = np.array([k % 3, k // 3], float) / np.array([3.0, 2.0])
        for a, b in ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)):
            verts.append(0.5 * n + a * r + b * u)
            uvs.append(cell + np.array([(a + 0.5) * 0.8 + 0.1, (0.5 - b) * 0.8 + 0.1]) / np.array([3.0, 2.0]))
            normals.append(n)
        faces += [[4 * k, 4 * k + 1, 4 * k + 2], [4 * k, 4 * k + 2, 4 * k + 3]]
    mesh = TriMesh(np.array(verts), np.array(faces), normals=np.array(normals, np.float32),
                   uvs=np.array(uvs, np.float32), base_color=np.full((32, 48, 3), colour, np.uint8),
                   normal_map=np.full((16, 16, 3), normal_rgb, np.uint8))
    mesh.tangents = compute_tangents(mesh)
    return mesh


def expected(colour, n_dot_l: float, config: PreviewConfig) -> np.ndarray:
    """The documented lighting model for one albedo and one n . l, as sRGB uint8."""
    lin = srgb_to_linear(np.asarray(colour, np.float32) / 255.0)
    return linear_to_srgb8(lin * (config.ambient + config.diffuse * max(n_dot_l, 0.0)))


def test_cube_face_colours_follow_the_lighting_model():
    """Seen from azimuth 45 the front (+Z) face is on the left, the right (+X) face on the right; a light
    along the camera's right axis misses the front face (ambient only) and hits +X at 45 degrees."""
    config = PreviewConfig(supersample=1, light=(1.0, 0.0, 0.0))
    surface = prepare_surface(cube())
    image = render_lit(surface, orbit_camera(45.0, 0.0), SIZE, config).astype(int)
    row = SIZE // 2
    np.testing.assert_allclose(image[row, int(0.3 * SIZE)], expected(COLOUR, 0.0, config), atol=1)
    np.testing.assert_allclose(image[row, int(0.7 * SIZE)], expected(COLOUR, np.sqrt(0.5), config), atol=1)
    head_on = PreviewConfig(supersample=1, light=(0.6, 0.0, 0.8))
    front = render_lit(surface, orbit_camera(0.0, 0.0), SIZE, head_on).astype(int)
    np.testing.assert_allclose(front[row, row], expected(COLOUR, 0.8, head_on), atol=1)
    assert (front[0, 0] == head_on.background).all()                       # the corner is background


def test_flat_normal_map_renders_like_the_geometric_normals():
    """(128, 128, 255) is the unperturbed normal: the render equals shading by the vertex normals alone."""
    verts, faces = icosphere(3)
    u = np.arctan2(verts[:, 0], verts[:, 2]) / (2 * np.pi) + 0.5
    v = np.arccos(np.clip(verts[:, 1], -1, 1)) / np.pi
    mesh = TriMesh(verts, faces, normals=verts.copy(), uvs=np.stack([u, v], 1).astype(np.float32),
                   base_color=np.full((8, 8, 3), COLOUR, np.uint8),
                   normal_map=np.full((8, 8, 3), (128, 128, 255), np.uint8))
    mesh.tangents = compute_tangents(mesh)
    config = PreviewConfig(supersample=2)
    surface = prepare_surface(mesh)
    for az, el in ((0.0, 20.0), (135.0, -30.0)):
        with_map = render_lit(surface, orbit_camera(az, el), SIZE, config).astype(int)
        without = render_lit(surface, orbit_camera(az, el), SIZE, config, normal_map=False).astype(int)
        assert np.abs(with_map - without).max() <= 1
        assert len(np.unique(with_map.reshape(-1, 3), axis=0)) > 20            # shaded, not flat


def _tilted(x: float, y: float) -> tuple[int, int, int]:
    """Normal-map RGB of the unit tangent-space normal (x, y, sqrt(1 - x^2 - y^2))."""
    n = np.array([x, y, np.sqrt(1 - x * x - y * y)])
    return tuple(int(c) for c in np.round((n + 1) / 2 * 255))


@pytest.mark.parametrize("light, tilt, brighter", [
    ((0.6, 0.0, 0.8), (0.5, 0.0), True),    # map +x = +u = image right, towards a light on the right
    ((0.6, 0.0, 0.8), (-0.5, 0.0), False),
    ((0.0, 0.6, 0.8), (0.0, 0.5), True),    # map +y = bitangent = image up (decreasing glTF v), light above
    ((0.0, 0.6, 0.8), (0.0, -0.5), False),
])
def test_tilted_normal_map_turns_the_shading_towards_its_tilt(light, tilt, brighter):
    """The front face seen head-on: T = +X (image right), B = cross(N, T) * w = +Y (image up). A map
    tilted towards the light brightens the face, away from it darkens it, by the amount the model says."""
    config = PreviewConfig(supersample=1, light=light)
    flat = render_lit(prepare_surface(cube()), orbit_camera(0.0, 0.0), SIZE, config)[SIZE // 2, SIZE // 2]
    mesh = cube(normal_rgb=_tilted(*tilt))
    np.testing.assert_allclose(mesh.tangents[:4], [[1, 0, 0, 1]] * 4, atol=1e-6)  # the +Z face's frame
    pixel = render_lit(prepare_surface(mesh), orbit_camera(0.0, 0.0), SIZE, config)[SIZE // 2, SIZE // 2]
    assert (pixel.astype(int).sum() > flat.astype(int).sum()) == brighter
    n = np.array(_tilted(*tilt)) / 255.0 * 2 - 1                    # decoded, as the renderer sees it
    n /= np.linalg.norm(n)
    np.testing.assert_allclose(pixel, expected(COLOUR, float(n @ np.array(light) / np.linalg.norm(light)),
                                               config), atol=1)


def test_wireframe_draws_the_visible_edges():
    """Front view of the cube: the front face's two triangles share the diagonal from its bottom-left to
    its top-right corner, the pixels r + c = SIZE - 1 at supersample 1; a pixel 5 px off it is clay."""
    config = PreviewConfig(supersample=1, light=(0.0, 0.0, 1.0))
    image = render_wireframe(prepare_surface(cube()), orbit_camera(0.0, 0.0), SIZE, config).astype(int)
    edge = linear_to_srgb8(np.array(EDGE_COLOUR)).astype(int)
    for r, c in ((SIZE // 2 - 1, SIZE // 2), (SIZE // 2 - 9, SIZE // 2 + 8)):
        assert np.abs(image[r, c] - edge).sum() <= 3, (r, c)
    assert np.abs(image[SIZE // 2, SIZE // 2 - 8] - edge).sum() > 100
    assert np.abs(image[SIZE // 2, SIZE // 2 - 8] - image[SIZE // 2 + 4, SIZE // 2 - 8]).sum() <= 3  # clay


def test_uv_layout_covers_exactly_the_charts_texels():
    """Coverage equals the numpy reference rasteriser's; outside the charts the picture is the untouched
    grid; inside it shows the atlas (edges lightened) with one outline colour per chart."""
    mesh = cube(colour=(230, 30, 30))
    size = 96
    image, covered = uv_layout(mesh, size)
    ref_face, _ = rasterize_uv_ref(mesh.uvs, mesh.faces, size)
    np.testing.assert_array_equal(covered, ref_face >= 0)
    assert 0.3 < covered.mean() < 0.8
    np.testing.assert_array_equal(image[~covered], background(size)[~covered])
    inside = image[covered].astype(int)
    assert (np.abs(inside - [230, 30, 30]).sum(axis=1) == 0).mean() > 0.4          # the atlas colour
    charts = chart_ids(mesh.faces, mesh.num_vertices)
    np.testing.assert_array_equal(charts, np.repeat(np.arange(6), 2))
    palette = chart_colours(6).astype(int)
    used = {k for k in range(6) if (np.abs(inside - palette[k]).sum(axis=1) == 0).sum() > 20}
    assert used == set(range(6))                                                  # every chart outlined
