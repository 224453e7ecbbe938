"""Ctrl-C and SIGTERM at any moment of ``assetgen generate`` leave either no output file or the complete
one, never a temporary file, and the last line says which (exit 130 / 143, no traceback). The signal is
sent when a given progress line appears, so the moments are deterministic: before any work, while the
GLB is being written, and after the output was reported written."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["--preset", "flash", "--faces", "1000", "--texture-size", "256", "--normal-map-size", "256"]


def _run_until(tmp_path: Path, trigger: str, sig: signal.Signals) -> tuple[int, str, Path]:
    """Start ``generate --example``; send ``sig`` once a line containing ``trigger`` is printed."""
    out = tmp_path / "o.glb"
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "engine.cli", "generate", "--example", "-o", str(out), *ARGS],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    deadline = time.monotonic() + 240
    try:
        for line in proc.stdout:
            lines.append(line)
            if trigger in line:
                proc.send_signal(sig)
                break
            assert time.monotonic() < deadline, "generate did not reach the trigger line"
        lines.extend(proc.stdout)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    return code, "".join(lines), out


@pytest.mark.slow
@pytest.mark.parametrize("sig,trigger", [
    (signal.SIGINT, "] preprocess ..."),
    (signal.SIGTERM, "] export glb ..."),
    (signal.SIGINT, "] export glb ..."),
    (signal.SIGTERM, "wrote "),
])
def test_signal_leaves_complete_file_or_none(tmp_path, sig, trigger):
    from engine.io.glb_export import read_glb_summary

    code, text, out = _run_until(tmp_path, trigger, sig)
    assert "Traceback" not in text, text
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")], text
    last = text.strip().splitlines()[-1]
    if code == 0:                                       # the signal came after the process had finished
        assert last.startswith("wrote ") and out.is_file()
    else:
        assert code == (130 if sig is signal.SIGINT else 143), text
        if out.exists():
            assert "1 of 1 output(s) written completely" in last, text
        else:
            assert "no output written, no partial file left" in last, text
    if out.exists():
        assert read_glb_summary(out)["faces"] > 0       # a complete, readable GLB
    if trigger.startswith("] preprocess"):
        assert not out.exists()
