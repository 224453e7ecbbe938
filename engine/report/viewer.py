"""The report's 3D viewer: three.js (vendored, MIT) inlined as an import map of ``data:`` URLs.

Why inlined: a report opened from a folder is a ``file://`` page, and Chromium refuses module scripts and
``fetch`` from ``file://`` (CORS: origin 'null'), so neither ``<script type="module" src="three.js">`` nor
``GLTFLoader.load("asset.glb")`` works there. ``data:`` URLs do, in Chromium and Firefox, from ``file://``
and from a web server alike. A ``data:`` module cannot resolve relative imports, so the three relative
imports of the vendored files are rewritten to bare specifiers of the same map (``REWRITES``); a vendored
copy with another relative import is refused rather than shipped broken.

The viewer's own code is ``viewer.js`` beside this module (GLTFLoader + OrbitControls, the GLB read from
the ``<script id="glb-data">`` block); ``error_hook.js`` records page errors into the DOM.
"""

from __future__ import annotations

import base64
import json
import re
from functools import lru_cache
from pathlib import Path

from engine.errors import ConfigError

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "vendor" / "three"
THREE_VERSION = "0.185.1"

# import specifier -> vendored file
MODULES = {
    "three": "build/three.module.min.js",
    "three/core": "build/three.core.min.js",
    "three/addons/loaders/GLTFLoader.js": "examples/jsm/loaders/GLTFLoader.js",
    "three/addons/controls/OrbitControls.js": "examples/jsm/controls/OrbitControls.js",
    "three/addons/utils/BufferGeometryUtils.js": "examples/jsm/utils/BufferGeometryUtils.js",
    "three/addons/utils/SkeletonUtils.js": "examples/jsm/utils/SkeletonUtils.js",
}
# vendored file -> (relative import as written, bare specifier it becomes)
REWRITES = {
    "build/three.module.min.js": [('"./three.core.min.js"', '"three/core"')],
    "examples/jsm/loaders/GLTFLoader.js": [
        ("'../utils/BufferGeometryUtils.js'", "'three/addons/utils/BufferGeometryUtils.js'"),
        ("'../utils/SkeletonUtils.js'", "'three/addons/utils/SkeletonUtils.js'"),
    ],
}
_RELATIVE_IMPORT = re.compile(r"""(?:\bfrom|\bimport)\s*\(?\s*['"]\.{1,2}/""")


def _missing(path: Path) -> ConfigError:
    return ConfigError(f"the report's three.js file {path} is missing",
                       "reinstall assetgen (engine/report/vendor/three ships with the package)")


def module_source(name: str) -> str:
    """The source of vendored module ``name`` (a key of ``MODULES``) with its relative imports rewritten."""
    rel = MODULES[name]
    path = VENDOR / rel
    if not path.is_file():
        raise _missing(path)
    text = path.read_text(encoding="utf-8")
    for old, new in REWRITES.get(rel, []):
        if old not in text:
            raise ConfigError(f"vendored {rel} no longer imports {old}",
                              "update engine.report.viewer.REWRITES for this three.js version")
        text = text.replace(old, new)
    if _RELATIVE_IMPORT.search(text):
        raise ConfigError(f"vendored {rel} has a relative import the report cannot resolve",
                          "add it to engine.report.viewer.REWRITES")
    return text


@lru_cache(maxsize=1)
def import_map_json() -> str:
    """The ``<script type="importmap">`` body: every module of ``MODULES`` as a base64 ``data:`` URL."""
    imports = {name: "data:text/javascript;base64," + base64.b64encode(module_source(name).encode()).decode()
               for name in MODULES}
    return json.dumps({"imports": imports})


def static_text(name: str) -> str:
    """A file shipped beside this module (``viewer.js``, ``error_hook.js``, ``report.css``)."""
    path = HERE / name
    if not path.is_file():
        raise _missing(path)
    return path.read_text(encoding="utf-8")


def licence_text() -> str:
    """three.js's MIT licence, shown in the report beside the viewer it ships."""
    path = VENDOR / "LICENSE"
    if not path.is_file():
        raise _missing(path)
    return path.read_text(encoding="utf-8")
