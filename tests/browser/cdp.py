"""Headless Chromium driven over the DevTools protocol (CDP), small enough to read.

Debian's ``chromium`` runs with the flags this machine needs (no sandbox as root, no GPU,
no background networking: the network is closed) and a profile folder of the caller's,
so a second process started on the same folder finds the first one's disk cache and
cookies. One websocket to the browser carries every command (flattened sessions); a
reader thread files replies by id and events in order, so a test can read what the
browser did on the wire: the headers it sent (``Network.requestWillBeSentExtraInfo``:
Cookie, If-None-Match as sent), the status it got (``responseReceivedExtraInfo``: a 304
shows there, while ``responseReceived`` shows the cached 200 it stands for), and where a
response came from (``fromDiskCache``, ``Network.requestServedFromCache``).

No Playwright, no browser download: the protocol is JSON over a websocket.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
)  # Chromium's defaults otherwise: its back/forward cache (whole pages kept in memory) is on


class CdpError(RuntimeError):
    pass


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def spki_hash(cert_pem: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a certificate, for
    ``--ignore-certificate-errors-spki-list``: Chromium then accepts a chain holding that
    key (and only it), as if a trusted CA had signed it, so its responses are cached."""
    der = subprocess.run(
        ["openssl", "x509", "-in", str(cert_pem), "-pubkey", "-noout"], capture_output=True, check=True
    ).stdout
    spki = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=der, capture_output=True, check=True
    ).stdout
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@dataclass
class Exchange:
    """One request as the page saw it and as it went on the wire (if it did)."""

    request_id: str
    url: str
    method: str
    sent_headers: dict[str, str] = field(default_factory=dict)  # lower-case names, as sent
    wire_status: int | None = None  # what the server answered (304 on a revalidation)
    status: int | None = None  # what the page got
    headers: dict[str, str] = field(default_factory=dict)  # response headers, lower-case names
    from_disk_cache: bool = False
    from_memory_cache: bool = False

    @property
    def on_wire(self) -> bool:
        return self.wire_status is not None

    @property
    def from_cache(self) -> bool:
        return self.from_disk_cache or self.from_memory_cache or (self.status == 200 and self.wire_status == 304)


class Browser:
    """One Chromium process on ``profile``; ``close()`` ends it (flushing caches and cookies)."""

    def __init__(self, profile: Path, *, extra_args: tuple[str, ...] = (), log: Path | None = None) -> None:
        binary = find_chromium()
        if binary is None:
            raise CdpError("chromium is not installed: scripts/bootstrap.sh installs it (Debian package chromium)")
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        self.profile = profile
        out = open(log or os.devnull, "ab")  # noqa: SIM115 - closed in close()
        self._log = out
        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", *extra_args, "about:blank"],
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            if self.process.poll() is not None:
                raise CdpError(f"chromium exited with {self.process.returncode} (see {log})")
            if time.monotonic() > deadline:
                self._kill()
                raise CdpError("chromium did not open its DevTools port in 60 s")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self._ws: ClientConnection = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30).__enter__()
        self._next = 0
        self._lock = threading.Lock()
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}  # by session id ("" for the browser)
        self._cond = threading.Condition()
        self._closed = False
        self.reader_error: Exception | None = None
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    # -- the wire -----------------------------------------------------------------------

    def _read(self) -> None:
        try:
            for raw in self._ws:
                message = json.loads(raw)
                with self._cond:
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self._events.setdefault(message.get("sessionId", ""), []).append(message)
                    self._cond.notify_all()
        except Exception as e:  # the socket closes when the browser does
            self.reader_error = e
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str = "") -> dict[str, Any]:
        with self._lock:
            self._next += 1
            ident = self._next
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        with self._cond:
            if not self._cond.wait_for(lambda: ident in self._replies or self._closed, timeout=60):
                raise CdpError(f"no reply to {method} in 60 s")
            if ident not in self._replies:
                raise CdpError(f"the browser closed while waiting for {method}: {self.reader_error!r}")
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    def take_events(self, session: str) -> list[dict[str, Any]]:
        with self._cond:
            return self._events.pop(session, [])

    def wait_event(self, session: str, method: str, timeout: float = 60) -> dict[str, Any]:
        """Wait for (and consume up to) the first ``method`` event of ``session``; the
        events before it stay queued for :meth:`take_events`."""
        with self._cond:

            def found() -> bool:
                return self._closed or any(e["method"] == method for e in self._events.get(session, []))

            if not self._cond.wait_for(found, timeout=timeout):
                raise CdpError(f"no {method} in {timeout} s")
            queue = self._events.get(session, [])
            for i, event in enumerate(queue):
                if event["method"] == method:
                    del queue[i]
                    return event
            raise CdpError(f"the browser closed while waiting for {method}: {self.reader_error!r}")

    # -- pages --------------------------------------------------------------------------

    def new_page(self, *, incognito: bool = False) -> Page:
        """A new tab; ``incognito``: in a new browser context of its own (its HTTP cache
        in memory, its own cookies), as a private window is."""
        params: dict[str, Any] = {"url": "about:blank"}
        if incognito:
            params["browserContextId"] = self.send("Target.createBrowserContext")["browserContextId"]
        target = self.send("Target.createTarget", params)["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, target, session)

    def close(self) -> None:
        if self.process.poll() is None:
            with suppress(CdpError):
                self.send("Browser.close")
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self._kill()
        self._ws.close()
        self._log.close()

    def _kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


class Page:
    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.session = session
        self.send("Network.enable")
        self.send("Page.enable")

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session)

    def set_language(self, accept_language: str) -> None:
        """The browser's language, as its settings would set it: the Accept-Language it sends."""
        ua = self.evaluate("navigator.userAgent")
        self.send("Emulation.setUserAgentOverride", {"userAgent": ua, "acceptLanguage": accept_language})

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def fetch(self, method: str, path: str) -> tuple[int, str]:
        """A request from the page's own script (same origin, its cookies), as a form or
        a button's handler sends it."""
        status, text = self.evaluate(
            f"fetch({json.dumps(path)}, {{method: {json.dumps(method)}}}).then(async r => [r.status, await r.text()])"
        )
        return int(status), str(text)

    def open(self, url: str) -> tuple[str, list[Exchange]]:
        """Go to ``url`` as a typed address or a followed link does (a forward navigation,
        never a reload), and return the page's text and the exchanges it caused."""
        self.send("Page.navigate", {"url": "about:blank"})
        self.browser.wait_event(self.session, "Page.loadEventFired")
        self.browser.take_events(self.session)
        reply = self.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise CdpError(f"navigating to {url}: {reply['errorText']}")
        self.browser.wait_event(self.session, "Page.loadEventFired")
        text = self.evaluate("document.body ? document.body.innerText : ''")
        return str(text), self._exchanges()

    def reload(self) -> tuple[str, list[Exchange]]:
        """The reload button: the page is revalidated (If-None-Match), never refetched blindly."""
        self.browser.take_events(self.session)
        self.send("Page.reload", {"ignoreCache": False})
        self.browser.wait_event(self.session, "Page.loadEventFired")
        return str(self.evaluate("document.body.innerText")), self._exchanges()

    def go(self, url: str) -> None:
        """Follow a link to ``url`` (a new history entry after the current one)."""
        self.browser.take_events(self.session)
        self.send("Page.navigate", {"url": url})
        self.browser.wait_event(self.session, "Page.loadEventFired")

    def back(self) -> tuple[str, list[Exchange]]:
        """The Back button: the previous history entry, restored from the back/forward
        cache if the browser kept the page there, else loaded as history loads are."""
        history = self.send("Page.getNavigationHistory")
        entry = history["entries"][history["currentIndex"] - 1]
        self.browser.take_events(self.session)
        self.send("Page.navigateToHistoryEntry", {"entryId": entry["id"]})
        self.browser.wait_event(self.session, "Page.frameNavigated")
        self.evaluate(
            "new Promise(r => document.readyState === 'complete' ? r() : addEventListener('load', () => r()))"
        )
        return str(self.evaluate("document.body.innerText")), self._exchanges()

    def cookies(self, url: str) -> list[dict[str, Any]]:
        return list(self.send("Network.getCookies", {"urls": [url]})["cookies"])

    def set_cookie(self, url: str, name: str, value: str) -> None:
        assert self.send("Network.setCookie", {"url": url, "name": name, "value": value})["success"]

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target})

    def _exchanges(self) -> list[Exchange]:
        by_id: dict[str, Exchange] = {}
        for event in self.browser.take_events(self.session):
            method, params = event["method"], event.get("params", {})
            rid = params.get("requestId")
            if method == "Network.requestWillBeSent":
                req = params["request"]
                by_id[rid] = Exchange(rid, req["url"], req["method"])
            elif rid in by_id:
                x = by_id[rid]
                if method == "Network.requestWillBeSentExtraInfo":
                    x.sent_headers = {k.lower(): v for k, v in params["headers"].items()}
                elif method == "Network.responseReceivedExtraInfo":
                    x.wire_status = int(params["statusCode"])
                elif method == "Network.requestServedFromCache":
                    x.from_memory_cache = True
                elif method == "Network.responseReceived":
                    response = params["response"]
                    x.status = int(response["status"])
                    x.headers = {k.lower(): v for k, v in response["headers"].items()}
                    x.from_disk_cache = bool(response.get("fromDiskCache"))
        return [x for x in by_id.values() if x.url.startswith("http")]


@contextmanager
def chromium(profile: Path, **kwargs: Any) -> Iterator[Browser]:
    browser = Browser(profile, **kwargs)
    try:
        yield browser
    finally:
        browser.close()
