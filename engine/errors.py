"""User-facing errors.

Every problem caused by the user's input (a file, a flag, a mesh) is raised as an ``AssetGenError`` whose
message names the problem and the fix in one line. The CLI prints that line and exits with status 2;
anything else is a bug and keeps its traceback.

The root and the classes the kernels raise are defined one layer down, in ``triton_kernels.errors``
(kernels never import from ``engine/``): ``AssetGenError`` is ``KernelInputError``, and ``ConfigError``,
``MeshError`` and ``MissingDependencyError`` are re-exported from there, so a kernel launcher's input error
is an ``AssetGenError`` like any other.
"""

from __future__ import annotations

from triton_kernels.errors import ConfigError as ConfigError  # re-exported: raised by kernels too
from triton_kernels.errors import KernelInputError
from triton_kernels.errors import MeshError as MeshError
from triton_kernels.errors import MissingDependencyError as MissingDependencyError

AssetGenError = KernelInputError
"""An input problem the user can fix. ``str(err)`` is a single line: problem, then fix."""


class InputImageError(AssetGenError):
    """The input picture cannot be used (missing, corrupt, too large, empty mask)."""


class WeightsError(AssetGenError):
    """A checkpoint cannot be used (missing file, missing/unexpected keys, wrong shapes or layout)."""


class DeviceMemoryError(AssetGenError):
    """The GPU ran out of memory for a stage; the fix names a smaller preset or setting."""
