"""Headless Chromium and the console server process, for the console's end-to-end tests and benchmark
(Selenium + the system browser).

Uses Debian's ``chromium`` and ``chromium-driver`` (installed by ``make setup``); never downloads a
browser or a driver (Selenium Manager is kept offline). Chromium runs as root here, so it needs
``--no-sandbox``; WebGL renders in software (SwiftShader), there is no GPU.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Sequence

from spine_nav.tracking.transport import free_tcp_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
    "--disable-extensions", "--disable-dev-shm-usage", "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader", "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
    "--window-size=1140,920",
)


class BrowserUnavailable(RuntimeError):
    """Chromium or chromedriver is missing: the message says what to install."""


class HeadlessChromium:
    """A Selenium-driven headless Chromium with a fresh profile; use as a context manager."""

    def __init__(self, page_load_timeout_s: float = 20.0) -> None:
        for exe, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
            if not Path(exe).exists():
                raise BrowserUnavailable(f"{exe} not found: install the Debian package {pkg} (make setup does)")
        os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download anything
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self._profile = tempfile.mkdtemp(prefix="spine_nav_chromium_")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self._profile}"):
            opts.add_argument(flag)
        try:
            self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        except Exception:
            shutil.rmtree(self._profile, ignore_errors=True)
            raise
        self.driver.set_page_load_timeout(page_load_timeout_s)
        self.driver.set_script_timeout(page_load_timeout_s)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def text(self, element_id: str) -> str:
        return self.js(f"return document.getElementById({element_id!r}).textContent")

    def screenshot(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(p))
        return p

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "HeadlessChromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ConsoleProcess:
    """``spine-nav console --port PORT --case CASE_DIR [EXTRA_ARGS]`` as a child process; use as a context manager.

    Ready when its ``/api/case`` answers (``TimeoutError`` naming the port, or ``RuntimeError`` with the
    tail of the server's log if it exits first); closed by ``first_signal`` (SIGTERM), then SIGKILL after
    ``stop_timeout_s``. ``port=None`` picks a free port on 127.0.0.1. The server's stdout and stderr go to
    ``log_path`` (a temporary file by default): a pipe that nobody reads would block a chatty server.
    """

    def __init__(self, case_dir: str | Path, port: int | None = None, env: dict | None = None,
                 ready_timeout_s: float = 30.0, stop_timeout_s: float = 10.0, extra_args: Sequence[str] = (),
                 log_path: str | Path | None = None, first_signal: int = signal.SIGTERM) -> None:
        self.port = int(port) if port else free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.stop_timeout_s = stop_timeout_s
        self.first_signal = first_signal
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"spine_nav_console_{self.port}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "spine_nav.cli.main", "console", "--port", str(self.port),
                                      "--case", str(case_dir), *extra_args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(ready_timeout_s)
        except BaseException:
            self.close()
            raise

    def answers(self) -> bool:
        return console_answers(self.url)

    def log_tail(self, n_chars: int = 2000) -> str:
        """The last ``n_chars`` of the server's output."""
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError as exc:
            return f"(log {self.log_path} unreadable: {exc})"

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"console server exited with {self.proc.returncode} (log {self.log_path}): "
                                   f"{self.log_tail()}")
            if self.answers():
                return
            time.sleep(0.05)
        raise TimeoutError(f"console server on port {self.port} did not answer within {timeout_s} s "
                           f"(log {self.log_path})")

    def close(self) -> None:
        from spine_nav.children import stop_child

        stop_child(self.proc, grace_s=self.stop_timeout_s, first=self.first_signal)
        self._log.close()

    def __enter__(self) -> "ConsoleProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def console_status(url: str) -> dict | None:
    """The console server's ``api/status`` at ``url`` (``http://host:port/``): connected pages and the live
    streams' ages; None when it does not answer (1 s bound)."""
    try:
        with urllib.request.urlopen(url + "api/status", timeout=1.0) as r:
            return json.loads(r.read()) if r.status == 200 else None
    except (OSError, ValueError):
        return None


def console_answers(url: str) -> bool:
    """Whether the console server at ``url`` (``http://host:port/``) answers ``api/case`` (1 s bound)."""
    try:
        with urllib.request.urlopen(url + "api/case", timeout=1.0) as r:
            return r.status == 200
    except OSError:
        return False
