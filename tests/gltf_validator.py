"""Run the Khronos glTF-Validator (npm ``gltf-validator``, through ``tests/gltf_validate.mjs``) from Python.

Install once (CI runs the same command): ``npm install --prefix tests/.node gltf-validator@2.0.0-dev.3.10``.
``validator_missing()`` says why it cannot run; tests call ``require_validator()``, which skips locally but
fails under CI (``CI=true``) so a missing validator can never silently pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "gltf_validate.mjs"
PACKAGE = HERE / ".node" / "node_modules" / "gltf-validator"
INSTALL = "npm install --prefix tests/.node gltf-validator@2.0.0-dev.3.10"


class ValidatorUnavailable(RuntimeError):
    """node or the gltf-validator package is missing."""


def validator_missing() -> str | None:
    """None when the validator can run, else a one-line reason with the fix."""
    if shutil.which("node") is None:
        return "node is not installed (install Node.js >= 18)"
    if not (PACKAGE / "package.json").is_file():
        return f"gltf-validator npm package missing at {PACKAGE} (run: {INSTALL})"
    return None


def validate_gltf(path: str | Path, timeout: float = 120.0) -> dict:
    """The validator's JSON report for a .glb/.gltf file (keys: issues{numErrors, numWarnings, numInfos,
    numHints, messages[]}, info, validatorVersion, ...). Raises ValidatorUnavailable when node or the
    package is missing and RuntimeError when the validator itself fails."""
    reason = validator_missing()
    if reason is not None:
        raise ValidatorUnavailable(reason)
    proc = subprocess.run(["node", str(SCRIPT), str(path)], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"gltf-validator failed on {path} (exit {proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def require_validator() -> None:
    """Skip the calling test when the validator is unavailable locally; fail it under CI (CI=true)."""
    import pytest

    reason = validator_missing()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"glTF validator required in CI: {reason}")
    pytest.skip(reason)


def format_issues(report: dict) -> str:
    """One line per message: severity, code, pointer, text (severity 0 error .. 3 hint)."""
    names = {0: "ERROR", 1: "WARNING", 2: "INFO", 3: "HINT"}
    return "\n".join(f"{names.get(m.get('severity'), m.get('severity'))} {m.get('code')} "
                     f"{m.get('pointer', '')}: {m.get('message')}"
                     for m in report.get("issues", {}).get("messages", []))
