"""Open a page in headless Chromium (Debian's ``chromium``) and read it back: console errors, a screenshot,
values of expressions. Python stdlib only: the DevTools protocol over ``--remote-debugging-pipe``
(Chromium reads JSON commands from fd 3 and writes replies and events to fd 4, each message ended by NUL).

Why not ``--dump-dom`` / ``--screenshot`` with ``--virtual-time-budget``: virtual time does not wait for
work off the main thread (the GLB's textures decode through ``createImageBitmap``), so whether the page
had finished when the DOM was dumped varied from run to run (seen here: "loading" in 2 of 3 runs). Over the
protocol the test waits for the page's own "ready" signal, then takes the screenshot, and it hears every
console message and uncaught exception as an event.

WebGL without a GPU: ``--use-angle=swiftshader --enable-unsafe-swiftshader`` (ANGLE on SwiftShader's
Vulkan; without the second flag Chromium 156 refuses the software fallback). The other flags keep a root,
offline, headless Chromium quiet (no sandbox as root, no background connections to a closed network).

Install (``.ci/setup`` does it when missing): ``apt-get install -y chromium``. ``chromium_missing()`` says
why it cannot run; ``require_chromium()`` skips locally and fails under CI (``CI=true``).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio",
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
INSTALL = "apt-get install -y chromium"


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_missing() -> str | None:
    """None when Chromium can run, else a one-line reason with the fix."""
    return None if chromium_binary() else f"chromium is not installed (run: {INSTALL})"


def require_chromium() -> None:
    """Skip the calling test when Chromium is missing; under CI (CI=true) fail instead."""
    import pytest

    reason = chromium_missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; .ci/setup installs it")
    pytest.skip(reason)


@dataclass
class PageLog:
    """What the page said: console errors / warnings, uncaught exceptions, browser log errors."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Chromium:
    """One headless Chromium with one page, driven over the DevTools pipe. Use as a context manager."""

    def __init__(self, width: int = 1280, height: int = 1000, timeout: float = 60.0) -> None:
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError(chromium_missing())
        self.timeout = timeout
        self.log = PageLog()
        self._events: list[dict] = []
        self._buffer = b""
        self._next_id = 0
        self._profile = tempfile.TemporaryDirectory(prefix="assetgen-chromium-")
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def plumb() -> None:                          # in the child: the pipe on fds 3 (in) and 4 (out)
            high_in, high_out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child, from_child))
            os.dup2(high_in, 3)                       # dup2 makes them inheritable; both may be 3 or 4 now
            os.dup2(high_out, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--window-size={width},{height}", f"--user-data-dir={self._profile.name}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=plumb, close_fds=False)
        os.close(to_child)
        os.close(from_child)
        targets = self._call("Target.getTargets")["targetInfos"]
        page = next(t["targetId"] for t in targets if t["type"] == "page")
        self._session = self._call("Target.attachToTarget", {"targetId": page, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")

    # -- protocol -------------------------------------------------------------------------------------------
    def _send(self, message: dict) -> int:
        self._next_id += 1
        message["id"] = self._next_id
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (code {self.proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        message: dict = {"method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        wanted = self._send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == wanted:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._event(reply)

    def _event(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            (self.log.warnings if params["type"] == "warning" else self.log.errors).append(text)
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.log.errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            kind = self.log.errors if entry.get("level") == "error" else self.log.warnings
            kind.append(f"{entry.get('source')}: {entry.get('text')}")

    def call(self, method: str, params: dict | None = None) -> dict:
        """A command to the page's session."""
        return self._call(method, params, self._session)

    # -- page -----------------------------------------------------------------------------------------------
    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def wait_for(self, expression: str, timeout: float | None = None, poll: float = 0.2):
        """Poll ``expression`` until it is truthy; returns its value. TimeoutError after ``timeout``, naming
        the page's errors so far."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(poll)
        raise TimeoutError(f"page never satisfied {expression!r}; page errors: {self.log.errors}")

    def screenshot(self, full_page: bool = False) -> bytes:
        """PNG bytes of the viewport, or of the whole page with ``full_page``."""
        params: dict = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": size["width"],
                                                           "height": size["height"], "scale": 1})
        return base64.b64decode(self.call("Page.captureScreenshot", params)["data"])

    def close(self) -> None:
        try:
            self._call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._write)
        os.close(self._read)
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def screenshot_report(report: Path, png: Path, width: int = 1280, height: int = 1000,
                      full_page: bool = False) -> PageLog:
    """Open an AssetGen ``report.html``, wait for its viewer, write a screenshot; returns the page's log."""
    with Chromium(width, height) as browser:
        browser.open(Path(report).resolve().as_uri())
        browser.wait_for("document.body && document.body.dataset.viewer !== 'loading' && "
                         "document.body.dataset.viewer")
        Path(png).write_bytes(browser.screenshot(full_page))
        return browser.log


if __name__ == "__main__":                  # python tests/chromium_cdp.py report.html shot.png [--full-page]
    log = screenshot_report(Path(sys.argv[1]), Path(sys.argv[2]), full_page="--full-page" in sys.argv)
    print(json.dumps(log.__dict__, indent=1))
