"""Texture path: condition renders, backprojection, blending, 3D inpainting, reference projection,
transfer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import IMAGES, asset_path

from engine.errors import InputImageError, MeshError
from engine.geometry.mesh import TriMesh
from engine.geometry.rasterize import interpolate, rasterize_ortho
from engine.texture.backproject import (
    edge_mask,
    fuse_views,
    sample_views,
    texel_geometry,
    visibility,
)
from engine.texture.blend import blend_views, blend_views_ref
from engine.texture.inpaint import NEUTRAL_COLOUR, dilate_gutter, inpaint_3d
from engine.texture.reference_projection import texture_from_reference
from engine.texture.render_conditions import render_views, sample_bilinear_repeat
from engine.texture.transfer import surface_colours, transfer_texture
from engine.texture.views import camera_rig, normalize_to_sphere


def _quad(z: float, half: float = 0.5, flip: bool = False) -> TriMesh:
    """Square in the plane z facing +Z (or -Z when flip), UVs covering [0, 1]^2 (u = x, v = -y)."""
    v = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    uv = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)
    return TriMesh(v, f[:, ::-1] if flip else f, uvs=uv)


def _box(lo, hi, n: int = 2) -> TriMesh:
    """Axis-aligned box, each side an n x n grid with its own vertices and exact face normals."""
    verts, faces, norms = [], [], []
    s = np.linspace(0.0, 1.0, n + 1)
    uu, vv = np.meshgrid(s, s, indexing="xy")
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        for side in (0, 1):
            p = np.zeros(uu.shape + (3,))
            p[..., axis] = hi[axis] if side else lo[axis]
            p[..., a] = lo[a] + uu * (hi[a] - lo[a])
            p[..., b] = lo[b] + vv * (hi[b] - lo[b])
            base = sum(len(x) for x in verts)
            verts.append(p.reshape(-1, 3))
            nrm = np.zeros(3)
            nrm[axis] = 1.0 if side else -1.0
            norms.append(np.tile(nrm, ((n + 1) ** 2, 1)))
            for i in range(n):
                for j in range(n):
                    v0 = base + i * (n + 1) + j
                    faces += [[v0, v0 + 1, v0 + n + 2], [v0, v0 + n + 2, v0 + n + 1]]
    v = np.concatenate(verts).astype(np.float32)
    f = np.asarray(faces, np.int32)
    nv = np.concatenate(norms).astype(np.float32)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    flip = (fn * nv[f[:, 0]]).sum(1) < 0
    f[flip] = f[flip][:, ::-1]
    return TriMesh(v, f, normals=nv)


def _unwrap(mesh: TriMesh) -> TriMesh:
    import xatlas

    vmap, faces, uvs = xatlas.parametrize(mesh.vertices, mesh.faces)
    normals = None if mesh.normals is None else mesh.normals[vmap]
    return TriMesh(mesh.vertices[vmap], faces, normals=normals, uvs=uvs.astype(np.float32))


# ---------------------------------------------------------------------------------------------------
# condition renders
# ---------------------------------------------------------------------------------------------------

def test_render_views_plane_with_normal_map():
    mesh = _quad(0.2)
    mesh.tangents = np.tile(np.array([[1, 0, 0, 1]], np.float32), (4, 1))
    cam = camera_rig()[0]
    flat = render_views(mesh, [cam], 16)
    assert flat.mask[0].sum() == 64
    np.testing.assert_allclose(flat.normal[0][flat.mask[0]], [[0, 0, 1]] * 64, atol=1e-6)
    np.testing.assert_allclose(flat.position[0][flat.mask[0]][:, 2], 0.2, atol=1e-6)
    np.testing.assert_allclose(flat.depth[0][flat.mask[0]], 0.8, atol=1e-6)
    # tangent-space (0.6, 0, 0.8) -> world 0.6 T + 0.8 N; (0, 0.6, 0.8) -> B = cross(N, T) = +Y
    for ts, world in (((0.6, 0.0, 0.8), (0.6, 0.0, 0.8)), ((0.0, 0.6, 0.8), (0.0, 0.6, 0.8))):
        rgb = np.rint((np.asarray(ts) + 1) / 2 * 255).astype(np.uint8)
        mesh.normal_map = np.tile(rgb, (8, 8, 1))
        r = render_views(mesh, [cam], 16)
        np.testing.assert_allclose(r.normal[0][r.mask[0]], np.tile(world, (64, 1)), atol=0.01)
        off = render_views(mesh, [cam], 16, normal_map=False)
        np.testing.assert_allclose(off.normal[0][off.mask[0]], [[0, 0, 1]] * 64, atol=1e-6)


def test_render_views_real_mesh_rig(shared_dir):
    from engine.io.asset_load import load_mesh

    mesh = load_mesh(asset_path("spot"))
    mesh.vertices, _, _ = normalize_to_sphere(mesh.vertices)
    cams = camera_rig()
    r = render_views(mesh, cams, 128)
    assert r.position.shape == (10, 128, 128, 3) and r.mask.shape == (10, 128, 128)
    for k, cam in enumerate(cams):
        m = r.mask[k]
        assert m.mean() > 0.05
        np.testing.assert_allclose(np.linalg.norm(r.normal[k][m], axis=-1), 1.0, atol=1e-4)
        # visible normals face the camera for the closed model almost everywhere
        assert (r.normal[k][m] @ np.asarray(cam.direction) > 0).mean() > 0.95
        assert np.abs(r.position[k][m]).max() <= 1.0 + 1e-5


# ---------------------------------------------------------------------------------------------------
# backprojection, blending, inpainting on small inputs
# ---------------------------------------------------------------------------------------------------

def test_visibility_occlusion_and_edges():
    front, back = _quad(0.3), _quad(-0.3)                  # the back quad hides behind the front one
    mesh = TriMesh(np.concatenate([front.vertices, back.vertices]),
                   np.concatenate([front.faces, back.faces + 4]),
                   uvs=np.concatenate([front.uvs * [0.5, 1], back.uvs * [0.5, 1] + [0.5, 0]]))
    texels = texel_geometry(mesh, 32)
    cams = [camera_rig()[0], camera_rig()[4]]               # front and rear
    renders = render_views(mesh, cams, 64)
    edges = edge_mask(renders)
    assert edges[0].any() and not (edges[0] & ~renders.mask[0]).any()
    inc = visibility(texels, cams, renders, edges=edges)
    left = texels.valid & (np.arange(32) < 16)[None, :]     # texels of the front quad
    right = texels.valid & ~left
    interior = np.zeros((32, 32), bool)
    interior[4:-4, 4:12] = True
    assert (inc[0][left & interior] > 0.99).all()           # front quad seen head-on from the front
    assert (inc[0][right] == 0).all()                       # back quad occluded from the front
    assert (inc[1][left] == 0).all() and (inc[1][right] == 0).all()  # both face +Z: back-facing for rear
    no_edges = visibility(texels, cams, renders)
    assert (no_edges[0] > 0).sum() > (inc[0] > 0).sum()     # the edge mask removes silhouette texels


def test_blend_matches_reference_and_large_alpha():
    rng = np.random.default_rng(0)
    k, h = 4, 8
    colours = rng.random((k, h, h, 3)).astype(np.float32)
    inc = rng.random((k, h, h)).astype(np.float32) * (rng.random((k, h, h)) > 0.3)
    priors = np.array([1.0, 0.3, 0.01, 0.001])
    atlas, known = blend_views(colours, inc, priors, alpha=4.0)
    ref, known_ref = blend_views_ref(colours, inc, priors, alpha=4.0)
    assert (known == known_ref).all()
    np.testing.assert_allclose(atlas, ref, atol=1e-5)
    # very sharp blend: finite, and converges to the single best view w_k I_k^alpha
    sharp, known_s = blend_views(colours, inc, priors, alpha=400.0, eps=0.0)
    logw = np.log(priors)[:, None, None] + 400 * np.log(np.maximum(inc, 1e-30))
    best = np.argmax(logw, axis=0)
    top2 = np.sort(logw, axis=0)[-2:]
    clear = known_s & (top2[1] - top2[0] > 10)                       # runner-up weight < e^-10
    pick = np.take_along_axis(colours, best[None, ..., None], 0)[0]
    assert np.isfinite(sharp).all() and clear.sum() > 20
    np.testing.assert_allclose(sharp[clear], pick[clear], atol=1e-3)
    unseen = ~(inc > 0).any(0)
    assert not known[unseen].any() and (atlas[unseen] == 0).all()


def test_inpaint_fills_everything_from_nearby_surface():
    mesh = _unwrap(_box([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5], n=2))
    texels = texel_geometry(mesh, 128)
    pos = texels.position
    known = texels.valid & (pos[..., 2] > 0.49)                      # front face observed ...
    atlas = np.full((128, 128, 3), np.nan, np.float32)
    atlas[known] = np.where(pos[known][:, :1] > 0, [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])  # red right, blue left
    stats: dict = {}
    out = inpaint_3d(atlas, known, texels, k=8, stats=stats)
    assert np.isfinite(out[texels.valid]).all() and stats["inpaint_unfilled"] == 0
    assert stats["inpaint_targets"] == (texels.valid & ~known).sum() and not stats["neutral_fill"]
    np.testing.assert_array_equal(out[known], atlas[known])
    right = texels.valid & ~known & (pos[..., 0] > 0.3)               # surface near the red half
    left = texels.valid & ~known & (pos[..., 0] < -0.3)
    assert (out[right][:, 0] > out[right][:, 2]).mean() > 0.95
    assert (out[left][:, 2] > out[left][:, 0]).mean() > 0.95
    # nothing known: neutral grey, flagged
    stats = {}
    grey = inpaint_3d(np.zeros((128, 128, 3), np.float32), np.zeros((128, 128), bool), texels, stats=stats)
    assert stats["neutral_fill"] and (grey[texels.valid] == NEUTRAL_COLOUR).all()


def test_dilate_gutter():
    valid = np.zeros((16, 16), bool)
    valid[4:8, 4:8] = True
    atlas = np.zeros((16, 16, 3), np.uint8)
    atlas[valid] = 200
    out = dilate_gutter(atlas, valid, 2)
    assert out.dtype == np.uint8 and (out[2:10, 4:8] == 200).all() and (out[4:8, 2:10] == 200).all()
    assert (out[0] == 0).all() and (out[12:] == 0).all()
    assert (dilate_gutter(atlas, valid, None) == 200).all()


# ---------------------------------------------------------------------------------------------------
# real assets
# ---------------------------------------------------------------------------------------------------

def _crate_box(image_mask: np.ndarray) -> TriMesh:
    """A box whose front face spans the mask's bounding box in the front view, depth = half its width."""
    s = image_mask.shape[0]
    rows, cols = np.nonzero(image_mask.any(1))[0], np.nonzero(image_mask.any(0))[0]
    x0, x1 = cols[0] / s * 2 - 1, (cols[-1] + 1) / s * 2 - 1
    y1, y0 = 1 - rows[0] / s * 2, 1 - (rows[-1] + 1) / s * 2
    w = (x1 - x0) / 2
    return _unwrap(_box([x0, y0, -w], [x1, y1, w], n=4))


def test_texture_from_reference_crate(shared_dir):
    from PIL import Image

    rgba = np.asarray(Image.open(IMAGES / "typical_misc_crate.png").convert("RGBA"))
    rgb, mask = np.ascontiguousarray(rgba[..., :3]), rgba[..., 3] > 127
    mesh = _crate_box(mask)
    cam = camera_rig()[0]
    assert cam.half_extent == 1.0 and cam.direction == (0.0, 0.0, 1.0)
    atlas, stats = texture_from_reference(mesh, rgb, mask, 1024)
    assert atlas.shape == (1024, 1024, 3) and atlas.dtype == np.uint8
    assert stats["inpaint_unfilled"] == 0 and stats["known_texels"] > 0.05 * stats["valid_texels"]
    # re-render the front view with the atlas: it reproduces the picture inside the mask
    s = rgb.shape[0]
    fid, bary, _ = rasterize_ortho(mesh.vertices, mesh.faces, cam, s)
    seen = mask & (fid >= 0)
    assert seen.sum() == mask.sum()
    render = sample_bilinear_repeat(atlas, interpolate(mesh.uvs, mesh.faces, fid, bary)[seen])
    mse = np.mean((render - rgb[seen].astype(np.float32)) ** 2)
    assert 10 * np.log10(255.0 ** 2 / mse) > 29.0
    # the unseen back face is filled with image colours, not left black
    texels = texel_geometry(mesh, 1024)
    back = texels.valid & (texels.normal[..., 2] < -0.9)
    assert atlas[back].mean() > 40 and (atlas[back].max(-1) > 0).all()


def test_reference_projection_bad_inputs():
    mesh = _unwrap(_box([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5], n=1))
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(InputImageError):
        texture_from_reference(mesh, img, np.zeros((32, 32), bool), 64)
    with pytest.raises(InputImageError):
        texture_from_reference(mesh, img[:, :16], np.ones((32, 16), bool), 64)
    with pytest.raises(MeshError):
        texture_from_reference(TriMesh(mesh.vertices, mesh.faces), img, np.ones((32, 32), bool), 64)


@pytest.fixture(scope="module")
def spot():
    from engine.io.asset_load import load_mesh

    src = load_mesh(asset_path("spot"))
    src.vertices, _, _ = normalize_to_sphere(src.vertices)
    return src, _unwrap(TriMesh(src.vertices, src.faces))


def _compare_at_random_points(src, tgt, atlas, n=4000):
    rng = np.random.default_rng(0)
    f = rng.integers(0, tgt.num_faces, n)
    b = rng.dirichlet([1, 1, 1], n).astype(np.float32)           # same face index = same triangle
    got = sample_bilinear_repeat(atlas, np.einsum("nk,nkc->nc", b, tgt.uvs[tgt.faces[f]]))
    want = surface_colours(src, f, b) * 255.0
    return np.abs(got - want)


def test_transfer_texture_spot(shared_dir, spot):
    src, tgt = spot
    atlas = transfer_texture(src, tgt, 512)
    err = _compare_at_random_points(src, tgt, atlas)
    assert err.mean() < 2.0 and np.percentile(err, 95) < 12.0
    # REPEAT addressing: shifting every source UV by whole tiles changes nothing
    shifted = src.copy(uvs=src.uvs + np.float32([2.0, -1.0]))
    assert np.abs(transfer_texture(shifted, tgt, 512).astype(int) - atlas).max() <= 1


def test_transfer_untextured_factor():
    tgt = _unwrap(_box([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5], n=1))
    src = TriMesh(tgt.vertices, tgt.faces, meta={
        "materials": [{"name": "red", "texture": None, "factor": np.float32([0.5, 0.2, 1.0, 1.0])}],
        "face_material": np.zeros(tgt.num_faces, np.int32)})
    atlas = transfer_texture(src, tgt, 64, gutter=None)
    # linear 0.5 / 0.2 / 1.0 encode to sRGB 188 / 124 / 255
    assert (atlas.reshape(-1, 3) == [188, 124, 255]).all()
    with pytest.raises(MeshError):
        transfer_texture(TriMesh(tgt.vertices, tgt.faces), tgt, 64)


def test_fuse_ten_views_spot(shared_dir, spot):
    """Render the textured spot from the 10-view rig, fuse the views into a new atlas, compare."""
    src, tgt = spot
    cams = camera_rig()
    res = 384
    images = np.zeros((10, res, res, 3), np.uint8)
    for k, cam in enumerate(cams):
        fid, bary, _ = rasterize_ortho(src.vertices, src.faces, cam, res)
        hit = fid >= 0
        images[k][hit] = np.rint(surface_colours(src, fid[hit], bary[hit]) * 255).astype(np.uint8)
    atlas, stats = fuse_views(tgt, cams, images, 512)
    assert stats["inpaint_unfilled"] == 0 and stats["known_texels"] > 0.9 * stats["valid_texels"]
    err = _compare_at_random_points(src, tgt, atlas)
    assert err.mean() < 4.0 and np.median(err) < 1.5
    colours = sample_views(texel_geometry(tgt, 64), cams, images)
    assert colours.shape == (10, 64, 64, 3) and 0 <= colours.min() and colours.max() <= 1


def test_uv_ring_fill_stays_inside_a_chart():
    """Two charts side by side in the atlas (3D far apart): colour spreads ring by ring inside chart A
    from its known texels, never into chart B, whose texels are left to the 3D stage."""
    from engine.texture.inpaint import uv_ring_fill

    h, w = 6, 10
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    position = np.stack([xx, yy, np.where(xx >= 5, 100.0, 0.0)], -1).astype(np.float32)  # chart B far away
    valid = np.ones((h, w), bool)
    known = np.zeros((h, w), bool)
    known[:, 0] = True
    atlas = np.zeros((h, w, 3), np.float32)
    atlas[:, 0] = 0.25
    out, grown, filled = uv_ring_fill(atlas, known, valid, position, delta=1.0, rings=16, gate=3.0)
    assert grown[:, :5].all() and not grown[:, 5:].any() and filled == h * 4
    assert np.allclose(out[:, :5], 0.25)
    out2, grown2, _ = uv_ring_fill(atlas, known, valid, position, delta=1.0, rings=2, gate=3.0)
    assert grown2[:, :3].all() and not grown2[:, 3:].any()                     # one ring per step


def test_weight_free_back_takes_the_mirrored_picture(tmp_path):
    """A disc picture, green inside, red ring outside: on the silhouette prior the back's centre is the
    mirror of the front's centre, so it must come out green (the flipped picture seen by the rear camera).
    Without the mirror it was inpainted from the nearest seen texels, the red rim."""
    from PIL import Image

    from engine.config import PipelineConfig
    from engine.io.asset_load import load_mesh
    from engine.runtime.engine import Engine

    size = 160
    yy, xx = (np.mgrid[0:size, 0:size] - (size - 1) / 2) / (size / 2)
    r = np.hypot(xx, yy)
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[r < 0.8] = (220, 30, 30, 255)
    rgba[r < 0.4] = (30, 200, 40, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "disc.png")
    config = PipelineConfig.from_name("flash").with_overrides(faces=2000, texture_size=256,
                                                              normal_map_size=128).for_device()
    with Engine(config) as engine:
        result = engine.generate(tmp_path / "disc.png", tmp_path / "disc.glb")
    assert "mirrored, onto the back" in result.sources["texture"]
    mesh = load_mesh(tmp_path / "disc.glb")
    v, uv = mesh.vertices, mesh.uvs
    lo, hi = v.min(0), v.max(0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    rel = (v - centre) / half
    back_centre = (rel[:, 2] < -0.5) & (np.hypot(rel[:, 0], rel[:, 1]) < 0.25)
    assert back_centre.sum() >= 3
    atlas = mesh.base_color
    px = np.clip((uv[back_centre] * atlas.shape[0]).astype(int), 0, atlas.shape[0] - 1)
    colours = atlas[px[:, 1], px[:, 0]].astype(int)
    assert (colours[:, 1] > colours[:, 0] + 60).mean() > 0.9, colours[:10]   # green, not the red rim
