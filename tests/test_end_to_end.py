"""The two commands a user runs, on real inputs from ../shared, checked against the asset contract and the
Khronos glTF-Validator. CI budget: one picture and a representative subset of meshes at small budgets."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import IMAGES, asset_path
from gltf_validator import validate_gltf

from engine.cli import main

SMALL = ["--faces", "3000", "--texture-size", "512", "--normal-map-size", "512"]


def _check_asset(path: Path, max_faces: int) -> dict:
    from engine.io.glb_export import read_glb_summary

    report = validate_gltf(path)
    issues = report["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
    summary = read_glb_summary(path)
    assert 0 < summary["faces"] <= max_faces
    for key in ("has_uv", "has_tangents", "has_normal_map", "has_base_color"):
        assert summary[key], key
    return summary


def test_generate_writes_a_valid_asset(tmp_path, capsys):
    """The README's first command: the example picture shipped in the package, no ../shared needed."""
    out = tmp_path / "crate.glb"
    code = main(["generate", "--example", "-o", str(out), *SMALL, "--timings"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "shape source: silhouette prior" in printed and "texture source: reference projection" in printed
    assert "stage timings" in printed
    _check_asset(out, 3000)
    assert [p.name for p in tmp_path.iterdir()] == ["crate.glb"]  # no temporary files left behind


@pytest.mark.parametrize("name", ["duck", "spot", "camelhead", "twosidedplane", "milktruck"])
def test_process_real_assets(shared_dir, tmp_path, name):
    out = tmp_path / f"{name}.glb"
    assert main(["process", str(asset_path(name)), "-o", str(out), *SMALL]) == 0
    _check_asset(out, 3000)


def test_info_prints_the_contract(shared_dir, tmp_path, capsys):
    out = tmp_path / "duck.glb"
    assert (
        main(
            [
                "process",
                str(asset_path("duck")),
                "-o",
                str(out),
                "--faces",
                "1000",
                "--texture-size",
                "256",
                "--normal-map-size",
                "256",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "faces" in printed and "has_tangents" in printed


def _png(path: Path, rgba: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(rgba, "RGBA").save(path)
    return path


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    empty = np.zeros((64, 64, 4), np.uint8)
    full = np.full((64, 64, 4), 255, np.uint8)
    truncated = tmp / "truncated.png"
    truncated.write_bytes((IMAGES / "typical_misc_crate.png").read_bytes()[:5000])
    (tmp / "zero.png").write_bytes(b"")
    (tmp / "text.png").write_text("not an image")
    (tmp / "nofaces.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    (tmp / "nan.obj").write_text("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n")
    gen, proc = ["generate"], ["process"]
    return {
        "missing": (gen + [str(tmp / "nope.png")], "not found"),
        "zero-byte": (gen + [str(tmp / "zero.png")], "empty"),
        "non-image": (gen + [str(tmp / "text.png")], "image"),
        "truncated": (gen + [str(truncated)], "truncated"),
        "fully transparent": (gen + [str(_png(tmp / "empty.png", empty))], "fully transparent"),
        "full mask": (gen + [str(_png(tmp / "full.png", full))], "mask"),
        "missing onnx": (
            gen + [str(IMAGES / "typical_misc_crate.png"), "--segmenter", str(tmp / "m.onnx")],
            "not found",
        ),
        "no faces": (proc + [str(tmp / "nofaces.obj")], "no faces"),
        "nan": (proc + [str(tmp / "nan.obj")], "NaN"),
        "budget": (proc + [str(asset_path("duck")), "--faces", "3"], "below 4"),
        "bad out": (
            proc + [str(asset_path("duck")), "-o", str(tmp / "missing_dir" / "a.glb")],
            "does not exist",
        ),
        **_refused_before_work(tmp),
    }


def _refused_before_work(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Cases that must be refused before any stage runs (the test also checks no stage started)."""
    crate, duck = str(IMAGES / "typical_misc_crate.png"), str(asset_path("duck"))
    (tmp / "a_folder.glb").mkdir()
    (tmp / "plain_file").write_text("x")
    weights = tmp / "weights"
    weights.mkdir()
    for name in ("dinov2", "meshgen_coarse", "shape_vae"):
        (weights / f"{name}.safetensors").write_bytes(bytes(range(256)) * 4)
    return {
        "out is a folder": (["process", duck, "-o", str(tmp / "a_folder.glb")], "existing folder"),
        "out parent is a file": (["process", duck, "-o", str(tmp / "plain_file" / "a.glb")], "is a file"),
        "random checkpoint": (["generate", crate, "--weights", str(weights)], "cannot open checkpoint"),
        "missing shape model": (["generate", crate, "--shape-model", str(tmp / "nope")], "does not exist"),
        "remove-floaters range": (["process", duck, "--remove-floaters", "1.5"], "floater fraction"),
        "no picture": (["generate"], "no picture given"),
    }


def test_bad_inputs_give_one_line_errors_and_no_output(shared_dir, tmp_path, capsys):
    cases = _bad_inputs(tmp_path)
    (tmp_path / "probe").mkdir()
    before_work = set(_refused_before_work(tmp_path / "probe"))
    for label, (argv, needle) in cases.items():
        if "-o" not in argv:
            argv = argv + ["-o", str(tmp_path / "out.glb")]
        code = main(argv)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert code == 2, (label, err)
        assert len(lines) == 1 and needle.lower() in lines[0].lower(), (label, err)
        assert "Traceback" not in err, label
        assert not (tmp_path / "out.glb").exists(), label
        if label in before_work:
            assert "[1/" not in err, (label, "a stage ran before the error", err)
    made = {"a_folder.glb", "plain_file", "weights", "probe"}
    leftovers = [p.name for p in tmp_path.iterdir()
                 if p.suffix not in (".png", ".obj") and p.name not in made]
    assert leftovers == [], leftovers


def test_decompression_bomb_is_refused(tmp_path, capsys):
    # A PNG header claiming 100k x 100k pixels: refused before decoding.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 6, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )
    (tmp_path / "bomb.png").write_bytes(bomb)
    code = main(["generate", str(tmp_path / "bomb.png"), "-o", str(tmp_path / "out.glb")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "pixels" in err.lower()


def test_inconsistently_wound_mesh_is_repaired_by_remeshing(shared_dir, tmp_path, capsys):
    # A cube with one face pair flipped: process remeshes it watertight and says so.
    v = [(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tris = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    tris[0] = tris[0][::-1]
    src = tmp_path / "flipped.obj"
    src.write_text(
        "".join(f"v {x} {y} {z}\n" for x, y, z in v)
        + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in tris)
    )
    out = tmp_path / "flipped.glb"
    assert main(["process", str(src), "-o", str(out), *SMALL, "--timings"]) == 0
    assert "remeshed watertight" in capsys.readouterr().out
    _check_asset(out, 3000)


def test_dropped_inputs_are_said_in_the_normal_output(tmp_path, capsys):
    """What is dropped or changed is printed without --timings: an OBJ's missing texture file; an alpha
    channel that is not a usable cut-out. A fully transparent picture is refused before any work."""
    from PIL import Image
    from test_simplify import uv_sphere

    sphere = uv_sphere(16)
    lines = ["mtllib box.mtl", "usemtl painted"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in sphere.vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in sphere.faces]
    (tmp_path / "box.obj").write_text("\n".join(lines) + "\n")
    (tmp_path / "box.mtl").write_text("newmtl painted\nKd 0.8 0.2 0.2\nmap_Kd missing_colour.png\n")
    out = tmp_path / "box.glb"
    assert main(["process", str(tmp_path / "box.obj"), "-o", str(out), "--faces", "500", "--texture-size",
                 "256", "--normal-map-size", "256"]) == 0
    printed = capsys.readouterr().out
    assert "note: input mesh: texture missing_colour.png of material 'painted' not found" in printed, printed

    clear = tmp_path / "clear.png"
    Image.new("RGBA", (64, 64), (200, 10, 10, 0)).save(clear)
    assert main(["generate", str(clear), "-o", str(tmp_path / "clear.glb")]) == 2
    assert "fully transparent" in capsys.readouterr().err
    assert not (tmp_path / "clear.glb").exists()
