"""User-facing errors.

Every problem caused by the user's input (a file, a flag, a mesh) is raised as an ``AssetGenError`` whose
message names the problem and the fix in one line. The CLI prints that line and exits with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AssetGenError(Exception):
    """An input problem the user can fix. ``str(err)`` is a single line: problem, then fix."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem} (fix: {fix})")


class InputImageError(AssetGenError):
    """The input picture cannot be used (missing, corrupt, too large, empty mask)."""


class MeshError(AssetGenError):
    """A mesh cannot be used (no faces, NaN/Inf positions, unreadable file)."""


class ConfigError(AssetGenError):
    """A flag or configuration value is out of range."""


class MissingDependencyError(AssetGenError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"optional dependency '{module}' is not installed",
                         f"pip install 'assetgen[{extra}]'")


class WeightsError(AssetGenError):
    """A checkpoint cannot be used (missing file, missing/unexpected keys, wrong shapes or layout)."""


class DeviceMemoryError(AssetGenError):
    """The GPU ran out of memory for a stage; the fix names a smaller preset or setting."""
