"""Wavefront OBJ (+ MTL) reader for ``engine.io.asset_load`` (conventions of the result are documented there).

Coordinates are taken as-is; ``v/vt/vn`` corners with separate indices are split into unique vertices;
polygons are fan-triangulated; negative (relative) indices are resolved. OBJ ``vt`` has its origin
bottom-left, so ``v_gltf = 1 - v_obj``. MTL ``Kd`` + ``d`` (or ``Tr``) give the factor, ``map_Kd`` the
base-colour texture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import MeshError
from engine.io.asset_load_common import _decode_texture, _fan, _Materials, _Part


def _load_obj(path: Path, materials: _Materials, notes: list[str]) -> list[_Part]:
    """Wavefront OBJ: v (3, 4 or 6 values: xyz [w] [rgb]), vt, vn, f with v/vt/vn corners, usemtl, mtllib."""
    v, vt, vn, tokens, sizes, face_mat, face_snap, snaps = [], [], [], [], [], [], [], []
    library: dict[str, dict] = {}
    by_name: dict[str, int] = {}
    current, tag = -1, ""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if parts[0] == "f" and tag != "f":  # element counts at the start of a face block (negative indices)
            snaps.append((len(v), len(vt), len(vn)))
        tag = parts[0]
        if tag == "v":
            v.append(parts[1:7])
        elif tag == "vt":
            vt.append((parts[1:3] + ["0"])[:2])
        elif tag == "vn":
            vn.append(parts[1:4])
        elif tag == "f":
            tokens.extend(parts[1:])
            sizes.append(len(parts) - 1)
            face_mat.append(current)
            face_snap.append(len(snaps) - 1)
        elif tag == "mtllib":
            for name in parts[1:]:
                library.update(_parse_mtl(path.parent / name.replace("\\", "/"), notes))
        elif tag == "usemtl":
            name = " ".join(parts[1:])
            if name not in by_name:
                by_name[name] = _obj_material(name, library.get(name), materials, notes)
            current = by_name[name]
    if not sizes:
        return []
    if -1 in face_mat:
        default = materials.add("default", None, (1.0, 1.0, 1.0, 1.0))
        face_mat = [default if m == -1 else m for m in face_mat]
    positions = np.array([row[:3] for row in v], dtype=np.float64)
    colors = np.array([row[3:6] for row in v], np.float64) if v and all(len(r) >= 6 for r in v) else None
    raw = _obj_corners(tokens)                                      # [C, 3] OBJ indices, 0 = absent
    counts = np.asarray(snaps, np.int64)[np.repeat(np.asarray(face_snap), sizes)]    # [C, 3]
    c = np.where(raw > 0, raw - 1, np.where(raw < 0, counts + raw, -1))  # 0-based, -1 = absent
    bad = (c[:, 0] < 0) | (c[:, 0] >= len(v)) | (c[:, 1] >= len(vt)) | (c[:, 2] >= len(vn))
    if bad.any():
        raise MeshError(f"{path}: face refers to a vertex/uv/normal index that does not exist",
                        "re-export the OBJ; its face indices are corrupt")
    tri_corners, tri_face = _fan(np.asarray(sizes))
    if min(sizes) < 3:
        notes.append("skipped OBJ faces with fewer than 3 corners")
    material = np.asarray(face_mat, np.int32)[tri_face]
    if (c[:, 1:] < 0).all():  # geometry only: keep the vertex list as-is
        return [_Part(positions.astype(np.float32), c[tri_corners, 0], material, colors=colors)]
    unique, inverse = np.unique(c, axis=0, return_inverse=True)  # split v/vt/vn combinations
    uvs = normals = None
    if vt:
        uv_table = np.array(vt, dtype=np.float64)
        uvs = np.where(unique[:, 1:2] >= 0, uv_table[np.maximum(unique[:, 1], 0)], 0.0)
        uvs[:, 1] = np.where(unique[:, 1] >= 0, 1.0 - uvs[:, 1], 0.0)  # OBJ v is bottom-up
    if vn and (unique[:, 2] >= 0).all():
        normals = np.array(vn, dtype=np.float64)[unique[:, 2]]
    return [_Part(positions[unique[:, 0]].astype(np.float32), inverse.reshape(-1)[tri_corners], material,
                  normals, uvs, None if colors is None else colors[unique[:, 0]])]


def _obj_corners(tokens: list[str]) -> np.ndarray:
    """int64 [C, 3] (v, vt, vn) OBJ indices of face corners 'v', 'v/vt', 'v//vn', 'v/vt/vn'; 0 = absent.

    Fast path: when every token has the first token's pattern, all are parsed in one numpy call.
    """
    first, n = tokens[0], len(tokens)
    k, double = first.count("/"), "//" in first
    joined = " ".join(tokens)
    out = None
    if joined.count("/") == k * n and joined.count("//") == (n if double else 0):
        flat = np.fromstring(joined.replace("//", "/0/").replace("/", " "), dtype=np.int64, sep=" ")
        if flat.size == n * (k + 1):
            out = flat.reshape(n, k + 1)
    if out is None:  # mixed corner patterns: token by token
        rows = [(t.split("/") + ["", ""])[:3] for t in tokens]
        out = np.array([[int(x) if x else 0 for x in row] for row in rows], np.int64)
    if (out[:, 0] == 0).any():
        raise ValueError("OBJ face corner without a vertex index (index 0)")
    return np.pad(out, ((0, 0), (0, 3 - out.shape[1])))


def _parse_mtl(path: Path, notes: list[str]) -> dict[str, dict]:
    """{name: {"kd": [3] | None, "d": float, "map_kd": Path | None}} from an MTL file (missing: noted)."""
    if not path.is_file():
        notes.append(f"material library {path.name} not found; materials untextured")
        return {}
    out: dict[str, dict] = {}
    cur: dict | None = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        tag = parts[0]
        if tag == "newmtl":
            cur = out.setdefault(" ".join(parts[1:]), {"kd": None, "d": 1.0, "map_kd": None})
        elif cur is None:
            continue
        elif tag == "Kd" and len(parts) >= 4:
            cur["kd"] = [float(x) for x in parts[1:4]]
        elif tag == "d" and len(parts) >= 2:
            cur["d"] = float(parts[-1])
        elif tag == "Tr" and len(parts) >= 2:
            cur["d"] = 1.0 - float(parts[-1])
        elif tag == "map_Kd" and len(parts) >= 2:  # options (-s, -o, ...) precede the file name
            cur["map_kd"] = path.parent / parts[-1].replace("\\", "/")
    return out


def _obj_material(name: str, spec: dict | None, materials: _Materials, notes: list[str]) -> int:
    if spec is None:
        notes.append(f"material '{name}' not defined in any material library")
        return materials.add(name, None, (1.0, 1.0, 1.0, 1.0))
    texture = key = None
    if spec["map_kd"] is not None:
        if spec["map_kd"].is_file():
            key = str(spec["map_kd"].resolve())
            same = [i for i, k in enumerate(materials.texture_keys) if k == key]
            texture = materials.entries[same[0]]["texture"] if same else \
                _decode_texture(spec["map_kd"].read_bytes(), str(spec["map_kd"]))
        else:
            notes.append(f"texture {spec['map_kd'].name} of material '{name}' not found")
    kd = spec["kd"] if spec["kd"] is not None else [1.0, 1.0, 1.0]
    return materials.add(name, texture, [*kd, spec["d"]], key)
