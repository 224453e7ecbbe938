"""Errors the kernel launchers raise for inputs the caller can fix, one layer below the engine.

``str(err)`` is one line, ``<problem> (fix: <fix>)``, the format the CLI prints as ``error: ...``. The
engine builds its hierarchy on these classes rather than beside them (``engine.errors``: ``AssetGenError``
is ``KernelInputError``, and ``ConfigError``, ``MeshError`` and ``MissingDependencyError`` are the classes
below), so ``except AssetGenError`` and ``pytest.raises(MeshError)`` catch what a kernel raises while no
kernel imports from ``engine/``. Internal misuse (a non-contiguous tensor, a wrong dtype from our own
callers) stays a ``ValueError``/``TypeError``: a bug, not a user error.
"""

from __future__ import annotations


class KernelInputError(Exception):
    """An input problem the user can fix. ``str(err)`` is a single line: problem, then fix."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem} (fix: {fix})")


class ConfigError(KernelInputError):
    """A flag or configuration value is out of range."""


class MeshError(KernelInputError):
    """A mesh cannot be used (no faces, NaN/Inf positions, unreadable file)."""


class MissingDependencyError(KernelInputError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"optional dependency '{module}' is not installed",
                         f"pip install 'assetgen[{extra}]'")
