"""On-disk caches of the JIT compilers, so a second process starts warm.

Three compilers turn Python into machine code at run time, each with its own disk cache:

* numba (``@njit(cache=True)`` CPU kernels and ``@cuda.jit(cache=True)`` kernels): index ``*.nbi`` and data
  ``*.nbc`` files, found through ``numba.config.CACHE_DIR`` (env ``NUMBA_CACHE_DIR``);
* Triton (``@triton.jit`` kernels): env ``TRITON_CACHE_DIR`` / ``triton.knobs.cache.dir``;
* TorchInductor (``torch.compile``): env ``TORCHINDUCTOR_CACHE_DIR`` (read at each use).

``configure_jit_caches(folder)`` points all three into subfolders of ``folder``. CALL IT FIRST, before the
first kernel compiles and, for numba, before any module that defines a ``cache=True`` kernel is imported:
numba picks a function's cache location when the decorator runs (at import), not when it compiles, so a
kernel module imported earlier keeps caching next to its source (``__pycache__``) for the whole process.

Staleness: numba keys a cached kernel on its own source file's path and modification time only, so a
kernel that calls a device function from another file (``normal_bake_texels`` -> ``lbvh``) would load a
stale binary after an edit of that other file. The numba subfolder is therefore named by a hash of every
``triton_kernels/*.py`` source: any edit of a kernel file starts a fresh numba cache.

Under ``NUMBA_ENABLE_CUDASIM=1`` ``cuda.jit`` returns a simulator kernel that accepts and ignores
``cache=True`` (nothing is compiled, nothing is written); ``@njit`` caching works as on a GPU machine.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

_KERNELS = Path(__file__).resolve().parent


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/assetgen``, or ``~/.cache/assetgen`` when XDG_CACHE_HOME is unset or empty."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "assetgen"


def kernel_sources_digest() -> str:
    """12 hex digits of a SHA-1 over the names and bytes of ``triton_kernels/*.py`` (sorted)."""
    h = hashlib.sha1()
    for path in sorted(_KERNELS.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def configure_jit_caches(folder: Path) -> dict[str, Path]:
    """Point the numba, Triton and Inductor disk caches into subfolders of ``folder`` (created).

    Sets the environment variables (inherited by worker processes) and, where the compiler is already
    imported, its live setting. Returns {"numba": ..., "triton": ..., "inductor": ...}. Must run before
    the first kernel compiles and before kernel modules are imported (module docstring).
    """
    root = Path(folder).expanduser().resolve()
    paths = {"numba": root / "numba" / kernel_sources_digest(), "triton": root / "triton",
             "inductor": root / "inductor"}
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(paths["numba"])
    os.environ["TRITON_CACHE_DIR"] = str(paths["triton"])
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(paths["inductor"])
    if "numba" in sys.modules:                     # numba read its environment once, at import
        from numba.core import config

        config.CACHE_DIR = str(paths["numba"])
    if "triton" in sys.modules:                    # an explicit knob would shadow the environment
        import triton

        triton.knobs.cache.dir = str(paths["triton"])
    return paths


def _probe_sum(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def numba_cache_probe() -> tuple[int, int]:
    """Compile (or load) a tiny ``@njit(cache=True)`` function under the current numba cache setting and
    return its dispatcher's (cache hits, cache misses): (1, 0) when this process started warm, (0, 1) when
    it compiled and wrote the cache. For start-up logs and the tests; costs one small compile when cold."""
    import numba

    probe = numba.njit(cache=True)(_probe_sum)       # decorated here: the cache location is read now
    if probe(10) != 285:
        raise RuntimeError("numba cache probe returned a wrong sum")
    stats = probe.stats
    return sum(stats.cache_hits.values()), sum(stats.cache_misses.values())
