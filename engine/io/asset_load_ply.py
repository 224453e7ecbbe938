"""PLY and OFF readers for ``engine.io.asset_load`` (conventions of the result are documented there).

Coordinates are taken as-is (PLY / OFF are frequently Z-up; the caller decides); polygons are
fan-triangulated. PLY 8-bit colours are sRGB and converted to linear; PLY UV v is flipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import MeshError
from engine.io.asset_load_common import _fan, _Part

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _load_ply(path: Path) -> _Part:
    """PLY (ascii, binary_little_endian, binary_big_endian): vertex x y z [nx ny nz] [red green blue]
    [s t | u v | texture_u texture_v] and face vertex_indices lists (polygons fan-triangulated); other
    elements are read past and ignored. UV v is flipped (PLY tools use the OpenGL bottom-left origin)."""
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise MeshError(f"{path}: not a PLY file (missing 'ply' magic or end_header)", "re-export the file")
    body_start = data.index(b"\n", end) + 1 if b"\n" in data[end:] else len(data)
    fmt, elements = None, []
    for line in data[:end].decode("ascii", errors="replace").splitlines():
        p = line.split()
        if not p:
            continue
        if p[0] == "format":
            fmt = p[1]
        elif p[0] == "element":
            elements.append((p[1], int(p[2]), []))
        elif p[0] == "property" and elements:
            if p[1] == "list":
                elements[-1][2].append((p[4], ("list", _PLY_TYPES[p[2]], _PLY_TYPES[p[3]])))
            else:
                elements[-1][2].append((p[2], _PLY_TYPES[p[1]]))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise MeshError(f"{path}: unsupported PLY format '{fmt}'", "use ascii or binary PLY")
    tables = _ply_ascii(data[body_start:], elements) if fmt == "ascii" else \
        _ply_binary(data[body_start:], elements, "<" if fmt == "binary_little_endian" else ">")
    vert, face = tables.get("vertex", {}), tables.get("face", {})
    positions = np.stack([np.asarray(vert[a], np.float64) for a in "xyz"], axis=1)
    normals = np.stack([vert[a] for a in ("nx", "ny", "nz")], 1).astype(np.float64) \
        if all(a in vert for a in ("nx", "ny", "nz")) else None
    colors = None
    for names in (("red", "green", "blue"), ("r", "g", "b"),
                  ("diffuse_red", "diffuse_green", "diffuse_blue")):
        if all(n in vert for n in names):
            rgb = np.stack([vert[n] for n in names], 1)
            rgb = rgb / 255.0 if rgb.dtype.kind in "iu" else rgb.astype(np.float64)
            colors = _srgb_to_linear(np.clip(rgb, 0.0, 1.0))
            break
    uvs = None
    for a, b in (("s", "t"), ("u", "v"), ("texture_u", "texture_v"), ("texture_s", "texture_t")):
        if a in vert and b in vert:
            uvs = np.stack([vert[a], 1.0 - np.asarray(vert[b], np.float64)], 1)
            break
    lists = face.get("vertex_indices", face.get("vertex_index"))
    faces = np.zeros((0, 3), np.int64) if lists is None else _triangulate_lists(lists)
    return _Part(positions.astype(np.float32), faces, 0, normals, uvs, colors)


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _triangulate_lists(lists: np.ndarray | list) -> np.ndarray:
    """[T, 3] int64 from a fixed-width [F, k] index array or a list of variable-length polygons."""
    if isinstance(lists, np.ndarray):
        sizes, flat = np.full(lists.shape[0], lists.shape[1]), lists.reshape(-1)
    else:
        sizes = np.array([len(x) for x in lists], dtype=np.int64)
        flat = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    corners, _ = _fan(sizes)
    return flat.astype(np.int64)[corners]


def _ply_binary(body: bytes, elements: list, order: str) -> dict[str, dict]:
    tables: dict[str, dict] = {}
    offset = 0
    for name, count, props in elements:
        fields, at = [], offset
        for pname, ptype in props:  # guess fixed list lengths from the first record, verify below
            if isinstance(ptype, tuple):
                n = int(np.frombuffer(body, order + ptype[1], 1, at)[0]) if count else 0
                fields += [(pname + "#n", order + ptype[1]), (pname, order + ptype[2], (n,))]
                at += np.dtype(ptype[1]).itemsize + n * np.dtype(ptype[2]).itemsize
            else:
                fields.append((pname, order + ptype))
                at += np.dtype(ptype).itemsize
        dtype = np.dtype(fields) if count else np.dtype([("_", "u1")])
        if count and offset + dtype.itemsize * count > len(body):
            raise ValueError(f"element '{name}' runs past the end of the file")
        table = np.frombuffer(body, dtype, count, offset) if count else None
        lists = [p for p, t in props if isinstance(t, tuple)]
        if count and all((table[p + "#n"] == table.dtype[p].shape[0]).all() for p in lists):
            tables[name] = {p: table[p] for p, _ in props}
            offset += dtype.itemsize * count
        elif count:
            tables[name], offset = _ply_binary_variable(body, offset, count, props, order)
    return tables


def _ply_binary_variable(body: bytes, offset: int, count: int, props: list, order: str) -> tuple[dict, int]:
    """Record-by-record reader for elements whose lists vary in length (polygon meshes)."""
    out: dict[str, list] = {p: [] for p, _ in props}
    for _ in range(count):
        for pname, ptype in props:
            if isinstance(ptype, tuple):
                n = int(np.frombuffer(body, order + ptype[1], 1, offset)[0])
                offset += np.dtype(ptype[1]).itemsize
                out[pname].append(np.frombuffer(body, order + ptype[2], n, offset))
                offset += np.dtype(ptype[2]).itemsize * n
            else:
                out[pname].append(np.frombuffer(body, order + ptype, 1, offset)[0])
                offset += np.dtype(ptype).itemsize
    table = {p: (v if isinstance(t, tuple) else np.asarray(v)) for (p, t), v in zip(props, out.values())}
    return table, offset


def _ply_ascii(body: bytes, elements: list) -> dict[str, dict]:
    lines = [ln for ln in body.decode("ascii", errors="replace").splitlines() if ln.strip()]
    tables: dict[str, dict] = {}
    at = 0
    for name, count, props in elements:
        rows = [ln.split() for ln in lines[at: at + count]]
        if len(rows) < count:
            raise ValueError(f"element '{name}' has {len(rows)} of {count} records")
        at += count
        out: dict[str, list] = {p: [] for p, _ in props}
        uniform = count and len({len(r) for r in rows}) == 1
        if uniform and not any(isinstance(t, tuple) for _, t in props):
            arr = np.array(rows, dtype=np.float64)
            tables[name] = {p: arr[:, i].astype(t) for i, (p, t) in enumerate(props)}
            continue
        for r in rows:
            i = 0
            for pname, ptype in props:
                if isinstance(ptype, tuple):
                    n = int(r[i])
                    out[pname].append(np.array(r[i + 1: i + 1 + n], dtype=np.int64))
                    i += 1 + n
                else:
                    out[pname].append(float(r[i]))
                    i += 1
        tables[name] = {p: (v if isinstance(t, tuple) else np.asarray(v, t)) for (p, t), v in
                        zip(props, out.values())}
    return tables


def _load_off(path: Path) -> _Part:
    """OFF / COFF / NOFF: header, 'nv nf ne', nv vertex lines (xyz first), nf face lines 'k i0 .. ik-1'."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [row for row in (ln.split("#", 1)[0].split() for ln in text.splitlines()) if row]
    if not lines or not lines[0][0].upper().endswith("OFF") or lines[0][0][0].isdigit():
        raise MeshError(f"{path}: not an OFF file (missing 'OFF' header)", "re-export the file")
    head = lines[0][1:] if len(lines[0]) > 1 else lines[1]
    start = 1 if len(lines[0]) > 1 else 2
    nv, nf = int(head[0]), int(head[1])
    vert_rows, face_rows = lines[start: start + nv], lines[start + nv: start + nv + nf]
    if len(vert_rows) < nv or len(face_rows) < nf:
        raise MeshError(f"{path}: OFF file is truncated ({len(vert_rows)}/{nv} vertices, "
                        f"{len(face_rows)}/{nf} faces)", "re-export or re-download the file")
    positions = np.array([r[:3] for r in vert_rows], dtype=np.float64)
    polys = [np.array(r[1: 1 + int(r[0])], dtype=np.int64) for r in face_rows]
    if polys and len({p.size for p in polys}) == 1:
        return _Part(positions.astype(np.float32), _triangulate_lists(np.stack(polys)), 0)
    return _Part(positions.astype(np.float32), _triangulate_lists(polys), 0)
