"""JIT disk caches (triton_kernels/jit_cache.py): a second process loads numba's compiled code from the
folder given to ``configure_jit_caches`` instead of compiling again; the settings reach each compiler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from triton_kernels.jit_cache import configure_jit_caches, default_cache_dir

REPO = Path(__file__).resolve().parents[1]

# numba is imported BEFORE configuring (as in a process that imported numba early): the live config must
# be updated, not only the environment. The cuda.jit(cache=True) kernels run in the simulator (ignored).
_CHILD = """
import json, sys
import numba, torch
from triton_kernels.jit_cache import configure_jit_caches, numba_cache_probe
paths = configure_jit_caches(sys.argv[1])
from triton_kernels.connected_components import mesh_vertex_roots
roots = mesh_vertex_roots(torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32), 7).tolist()
hits, misses = numba_cache_probe()
print(json.dumps({"hits": hits, "misses": misses, "numba": str(paths["numba"]), "roots": roots}))
"""


def _child(folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", _CHILD, str(folder)], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cache_files(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc")}


def test_second_process_loads_numba_cache(tmp_path):
    first = _child(tmp_path)
    numba_dir = Path(first["numba"])
    assert numba_dir.is_relative_to(tmp_path)
    assert (first["hits"], first["misses"]) == (0, 1)              # cold: compiled and written
    written = _cache_files(tmp_path)
    assert any(p.endswith(".nbi") for p in written) and any(p.endswith(".nbc") for p in written)
    assert all(Path(p).is_relative_to(numba_dir) for p in written)
    assert first["roots"] == [0, 0, 0, 3, 3, 3, 6]
    second = _child(tmp_path)
    assert (second["hits"], second["misses"]) == (1, 0)            # warm: loaded, nothing compiled
    assert _cache_files(tmp_path) == written                       # and nothing rewritten


def test_configure_sets_every_compiler(tmp_path, monkeypatch, request):
    import triton
    from numba.core import config

    request.addfinalizer(triton.knobs.cache.reset)                 # drop the explicit knob afterwards
    for var in ("NUMBA_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(config, "CACHE_DIR", config.CACHE_DIR)     # restored after the test
    paths = configure_jit_caches(tmp_path)
    assert set(paths) == {"numba", "triton", "inductor"} and all(p.is_dir() for p in paths.values())
    assert config.CACHE_DIR == os.environ["NUMBA_CACHE_DIR"] == str(paths["numba"])
    assert os.environ["TRITON_CACHE_DIR"] == triton.knobs.cache.dir == str(tmp_path.resolve() / "triton")
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    assert cache_dir() == str(paths["inductor"])


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "assetgen"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "assetgen"
