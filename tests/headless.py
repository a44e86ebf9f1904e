"""Headless Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no
websocket library, no port. The tests use it to render the HTML reports and read the live DOM;
run as a script it writes the screenshots shown in README.md:

    python tests/headless.py runs/demo/export/report.html docs/img/export_report.png
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Debian's packages: chromium-headless-shell (small, what .ci/run installs) or chromium.
BINARIES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "chrome-headless-shell")


def find_chromium() -> str | None:
    """The first Chromium found on PATH (or ``QDUKD_CHROMIUM``), else None."""
    named = os.environ.get("QDUKD_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    return next((path for path in map(shutil.which, BINARIES) if path), None)


class Browser:
    """One headless Chromium process with one page; use as a context manager.

    Args:
        binary: the Chromium executable.
        width, height: the viewport in CSS pixels (device scale factor 1).
        timeout: seconds to wait for any one reply.
    """

    def __init__(self, binary: str, width: int = 1280, height: int = 900, timeout: float = 60.0) -> None:
        self.timeout, self._id, self._buffer = timeout, 0, b""
        self.events: list[dict[str, Any]] = []
        self._profile = tempfile.mkdtemp(prefix="qdukd-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        self._log = open(Path(self._profile) / "stderr.log", "wb")
        args = [binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
                "--force-device-scale-factor=1", "--disable-extensions", "--mute-audio",
                f"--user-data-dir={self._profile}", "about:blank"]
        # The protocol pipe is fd 3 (commands in) and fd 4 (replies out) in the child.
        actions = [(os.POSIX_SPAWN_DUP2, to_chrome_r, 3), (os.POSIX_SPAWN_DUP2, from_chrome_w, 4),
                   (os.POSIX_SPAWN_DUP2, self._log.fileno(), 1), (os.POSIX_SPAWN_DUP2, self._log.fileno(), 2)]
        self.pid = os.posix_spawn(binary, args, os.environ, file_actions=actions)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        try:
            target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.send("Page.enable", session=True)
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, params: dict[str, Any] | None = None, session: bool = False) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _read(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError(f"no reply from Chromium in {self.timeout:.0f} s; its log:\n{self.stderr()}")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the protocol pipe; its log:\n{self.stderr()}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def stderr(self) -> str:
        self._log.flush()
        return (Path(self._profile) / "stderr.log").read_text(errors="replace")[-4000:]

    def open(self, path: str | Path) -> None:
        """Load a local file and wait for its load event (every embedded image decoded)."""
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=True)
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not finish loading in {self.timeout:.0f} s")
            self.events.append(self._read())

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable results)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def table(self, selector: str) -> list[list[str]]:
        """The rendered text of every cell of a table, row by row (header row first)."""
        return self.evaluate(f"[...document.querySelectorAll({json.dumps(selector + ' tr')})]"
                             ".map(tr => [...tr.cells].map(c => c.innerText.trim()))")

    def screenshot(self, max_height: int | None = None, scale: float = 1.0) -> bytes:
        """A PNG of the whole page (or its top ``max_height`` CSS pixels), scaled by ``scale``."""
        import base64

        width, height = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        if max_height:
            height = min(height, max_height)
        shot = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": scale}}, session=True)
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        if self.pid:
            try:
                self.send("Browser.close")
            except Exception:
                pass
            for _ in range(50):
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    break
                time.sleep(0.1)
            else:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            self.pid = 0
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)


def main(argv: list[str]) -> int:
    """``headless.py PAGE.html OUT.png [MAX_HEIGHT] [SCALE]``: a screenshot of a report."""
    if len(argv) not in (2, 3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    binary = find_chromium()
    if binary is None:
        print(f"error: no Chromium found (looked for {', '.join(BINARIES)}); apt-get install chromium-headless-shell",
              file=sys.stderr)
        return 2
    max_height = int(argv[2]) if len(argv) > 2 else None
    scale = float(argv[3]) if len(argv) > 3 else 1.0
    with Browser(binary) as browser:
        browser.open(argv[0])
        Path(argv[1]).write_bytes(browser.screenshot(max_height, scale))
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
