"""Kernels never import from ``engine/``: dependencies point downward (cli -> pipeline -> stages -> kernels).

Every module under ``triton_kernels/`` is parsed (not imported) and each ``import``/``from ... import``
statement -- at top level, inside functions, under ``TYPE_CHECKING`` -- is checked. Relative imports stay
inside the package, so only absolute ones can reach ``engine``. The errors kernels raise are defined in
``triton_kernels.errors`` and are the engine's own classes, so the CLI still reports them as user errors.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest
import torch

KERNELS = Path(__file__).resolve().parents[1] / "triton_kernels"
MODULES = sorted(KERNELS.rglob("*.py"))


def engine_imports(path: Path) -> list[str]:
    """'line: statement' of every import of ``engine`` (or a submodule) in the file at ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name == "engine" or name.startswith("engine.") for name in names):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_kernel_modules_are_found():
    assert len(MODULES) >= 10 and KERNELS / "numba_cuda.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(KERNELS)))
def test_kernel_module_imports_nothing_from_engine(path: Path):
    assert engine_imports(path) == [], f"{path.name} imports from engine/ (kernels must not)"


def test_detector_sees_nested_and_type_checking_imports(tmp_path: Path):
    src = tmp_path / "probe.py"
    src.write_text("from typing import TYPE_CHECKING\n"
                   "if TYPE_CHECKING:\n    from engine.texture import views\n"
                   "def f():\n    import engine.errors as e\n    from enginex import y\n    return e, y\n")
    assert [line.split(":")[0] for line in engine_imports(src)] == ["3", "5"]


def test_engine_errors_are_the_kernel_errors():
    from engine import errors
    from triton_kernels import errors as kernel_errors

    assert errors.AssetGenError is kernel_errors.KernelInputError
    for name in ("ConfigError", "MeshError", "MissingDependencyError"):
        assert getattr(errors, name) is getattr(kernel_errors, name)
    assert issubclass(errors.InputImageError, kernel_errors.KernelInputError)


def test_kernel_input_error_reaches_the_cli_as_a_user_error(capsys, monkeypatch):
    from engine import cli
    from triton_kernels.knn_grid import build_grid
    from triton_kernels.numba_cuda import kernel_device

    parser = argparse.ArgumentParser()
    parser.set_defaults(run=lambda args: build_grid(torch.zeros(4, 3, device=kernel_device()), cell=0.0))
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err == "error: grid cell 0.0 must be finite and > 0 (fix: use ~2 point spacings)\n"
