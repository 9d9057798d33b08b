"""Headless Chromium driven over the DevTools protocol on a pipe: open a page, evaluate, click.

``chromium --remote-debugging-pipe`` reads protocol commands from its file descriptor 3
and answers on 4, each message JSON ended by a NUL byte: no port, no network, and no
package beyond the standard library. Used by the slow tests of the landscape page
(``tests/test_slow.py``); Debian's Chromium comes from ``make browser``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, no sandbox (root in a container), software WebGL for the 3-D view, and no
#: background networking: this machine has no network beyond its package registries.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1500,1000",
]


class Browser:
    """One headless Chromium with one page, driven from here; a context manager.

    Parameters
    ----------
    profile : Path
        Its profile folder (a test's tmp_path).
    """

    def __init__(self, profile: Path) -> None:
        to_chromium_read, to_chromium_write = os.pipe()
        from_chromium_read, from_chromium_write = os.pipe()

        def descriptors() -> None:
            # In the child, before the descriptors not kept are closed: the protocol's 3
            # and 4 (copied first, as either end may itself be 3 or 4).
            read, write = os.dup(to_chromium_read), os.dup(from_chromium_write)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=descriptors,
            pass_fds=(3, 4),
        )
        os.close(to_chromium_read)
        os.close(from_chromium_write)
        self.writer = os.fdopen(to_chromium_write, "wb")
        self.reader = os.fdopen(from_chromium_read, "rb")
        self.next_id = 0
        self.buffer = b""
        self.session: str | None = None

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):  # gone already
            self.command("Browser.close", session=False)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.writer, self.reader):
            with contextlib.suppress(OSError):  # Chromium gone first: nothing left to flush
                stream.close()

    def command(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        """Send one protocol command (to the page's session, or the browser) and return its result."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session and self.session is not None:
            message["sessionId"] = self.session
        self.writer.write(json.dumps(message).encode() + b"\0")
        self.writer.flush()
        while True:
            answer = self._message()
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return dict(answer.get("result", {}))

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            chunk = self.reader.read1(1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its protocol pipe")
            self.buffer += chunk
        text, self.buffer = self.buffer.split(b"\0", 1)
        return dict(json.loads(text))

    def open(self, url: str) -> None:
        """Open ``url`` in a new page and attach to it."""
        target = self.command("Target.createTarget", session=False, url=url)["targetId"]
        self.session = self.command("Target.attachToTarget", session=False, targetId=target, flatten=True)[
            "sessionId"
        ]

    def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.command(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
            timeout=int(timeout * 1000),
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(str(details.get("exception", {}).get("description", details)))
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression} stayed false for {timeout} s")

    def click(self, x: float, y: float) -> None:
        """A left click at page coordinates (x, y), as a mouse makes it."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.command("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> None:
        """The page as a PNG."""
        import base64

        path.write_bytes(base64.b64decode(self.command("Page.captureScreenshot", format="png")["data"]))
