"""The console's web server: one port for HTTP (page, slices, surface) and the WebSocket (``/ws``).

Built on the ``websockets`` library (asyncio): its ``process_request`` hook answers plain HTTP
GETs, so the page, the data endpoints and the live stream share one port and one event loop.
No ROS here: producers (the ROS bridge, tests, the benchmark) call :meth:`ConsoleServer.publish`
from any thread with dicts in the format of :mod:`spine_nav.console.state`.

Push path (latency matters: tool samples at up to 1 kHz, the page draws at most ~60 frames/s):
``publish`` applies the dict to the state at once (under a lock, in the caller's thread) and
coalesces it with what is not sent yet: only the latest update per stream is kept (tool, guard, arm,
health per tool, level, diagnostic name, ...). The event loop is woken once per batch, not once per
update, and sends the batch as ONE WebSocket text frame (a JSON array), at most one frame per
``send_interval_s`` (default 4 ms, 250 frames/s). A frame goes out as soon as the interval allows, so
an update after a quiet spell is not delayed. Why a limit: every frame costs the browser ~0.3-0.4 ms
of CPU (network service, IPC, a main-thread task) whatever it carries; at 250 Hz the limit merges the
guard's verdict on one sample with the next tool sample (~190 instead of ~340 frames/s measured) and
keeps a 1 kHz tracker at 250 frames/s. Why not the display rate (16.7 ms): unsynchronised with the
page's frames it adds up to a frame of latency (`spine-nav bench console`, 250 Hz, sample -> frame
p95: sent at once 22 ms, 4 ms limit 24-25 ms, 8 ms limit 29 ms). A tool update that replaces older ones lists
their sample times in ``covers_s``, so the page's latency measurement still counts every sample, at
the frame that shows it or a newer one.
A heartbeat (``{"t": "beat", "ages_s": {...}}``, every ``beat_period_s``) tells the page how old
each live stream is, so the page can say "stale" when the stack stops even though the server runs.

HTTP routes: ``/`` page, ``/app.js``, ``/view3d-worker.js`` (the 3D view's worker) and their
``.map``, ``/style.css``, ``/api/case``, ``/api/status`` (``{"pages": connected pages, "ages_s": the
live streams' ages}``, for a caller that waits for a viewer, as ``spine-nav train replay`` does),
``/api/slice?vol=NAME&axis=axial|coronal|sagittal&x=&y=&z=`` (mm), ``/api/surface?vol=NAME&iso=HU``.
Anything else is 404; files outside the case directory are refused (403).

Page -> server messages (JSON objects): ``{"req": "select_screw", "screw_id": "L4_left"}``,
``{"req": "ping"}``. A malformed message or an unknown request gets an ``{"t": "error"}`` reply;
the connection and the server keep running.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from http import HTTPStatus
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from spine_nav.console.slices import CaseData, CaseError
from spine_nav.console.state import ConsoleState

STATIC_DIR = Path(str(files("spine_nav.console") / "static"))  # package data (setup.py)
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.js.map": ("app.js.map", "application/json"),
    "/view3d-worker.js": ("view3d-worker.js", "text/javascript; charset=utf-8"),
    "/view3d-worker.js.map": ("view3d-worker.js.map", "application/json"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
#: streams whose age the heartbeat reports (the page marks them stale past its threshold)
LIVE_KINDS = ("tool", "guard", "arm", "health")
MAX_CLIENT_MESSAGE = 64 * 1024

log = logging.getLogger("spine_nav.console")

RequestHandler = Callable[[dict[str, Any]], dict[str, Any]]


def _response(status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> Response:
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body)),
                       "Cache-Control": "no-store", "Connection": "close"})
    for k, v in (extra or {}).items():
        headers[k] = v
    return Response(status, HTTPStatus(status).phrase, headers, body)


def _text(status: int, text: str) -> Response:
    return _response(status, (text + "\n").encode(), "text/plain; charset=utf-8")


def _json(obj: Any, status: int = 200) -> Response:
    return _response(status, json.dumps(obj).encode(), "application/json")


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None: JSON has no NaN/Infinity and the page's
    JSON.parse rejects a whole frame that contains one (the guard reports NaN errors when lost)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """Compact JSON for the page; non-finite floats become null."""
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(json_safe(obj), separators=(",", ":"), allow_nan=False)


def _float_param(q: dict[str, list[str]], key: str) -> float:
    try:
        v = float(q[key][0])
    except (KeyError, IndexError, ValueError):
        raise CaseError(f"query parameter {key!r}: expected a number", 400) from None
    if not math.isfinite(v):
        raise CaseError(f"query parameter {key!r}: must be finite", 400)
    return v


class ConsoleServer:
    """HTTP + WebSocket server of the console, running its own asyncio loop in a thread.

    Args:
        case: the case's volumes (or ``CaseData(None)`` for none).
        host: bind address (127.0.0.1 unless the user asks for another).
        port: TCP port (0: any free port; read :attr:`port` after :meth:`start`).
        beat_period_s: heartbeat period (stream ages for the page's stale check).
    """

    def __init__(self, case: CaseData, host: str = "127.0.0.1", port: int = 8080,
                 beat_period_s: float = 0.1, send_interval_s: float = 0.004) -> None:
        self.case = case
        self.host = host
        self.port = port
        self.beat_period_s = beat_period_s
        self.send_interval_s = send_interval_s
        self.state = ConsoleState(case=case.info())
        self.request_handler: RequestHandler | None = None
        self.stats = {"published": 0, "frames_sent": 0, "client_errors": 0, "http_requests": 0}
        self._last_seen: dict[str, float] = {}
        # producer threads and the event loop share these (under _lock): the state, the updates not
        # sent yet (latest per stream key, in arrival order), tool sample times they replaced
        self._lock = threading.Lock()
        self._pending: dict[Any, dict[str, Any]] = {}
        self._covers: list[float] = []
        self._wake_scheduled = False
        self._seq = 0
        self._last_send = -math.inf  # loop.time() of the last frame sent
        self._clients: set[ServerConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    # ---- life cycle -------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> "ConsoleServer":
        self._thread = threading.Thread(target=self._run, name="console_server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"console server did not start within {timeout_s} s")
        if self._error is not None:
            raise OSError(f"console server could not listen on {self.host}:{self.port}: {self._error}")
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._loop is not None and self._stopping is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> "ConsoleServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with serve(self._ws_handler, self.host, self.port, process_request=self._process_request,
                         max_size=MAX_CLIENT_MESSAGE, compression=None, ping_interval=5,
                         ping_timeout=10) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            beat = asyncio.create_task(self._beat())
            await self._stopping.wait()
            beat.cancel()
            for ws in list(self._clients):
                await ws.close(1001, "server stopping")

    # ---- producers (any thread) -------------------------------------------------------------
    def publish(self, update: dict[str, Any]) -> None:
        """Record ``update`` (dict with ``t``) and queue it for every page; thread-safe, never blocks
        on the network. An update of an unknown kind is dropped with a warning."""
        loop = self._loop
        with self._lock:
            try:
                out = self.state.apply(update)
            except ValueError as exc:
                log.warning("dropped update: %s", exc)
                return
            self._last_seen[update["t"]] = time.monotonic()
            self.stats["published"] += 1
            for u in out:
                key = self._stream_key(u)
                if key[0] == "tool":
                    prev = self._pending.get(key)
                    if prev is not None and isinstance(prev.get("stamp_s"), (int, float)):
                        self._covers.append(prev["stamp_s"])
                self._pending[key] = u
            wake = not self._wake_scheduled
            self._wake_scheduled = True
        if wake and loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._schedule_flush)
            except RuntimeError:  # loop closed between the check and the call
                pass

    def _stream_key(self, u: dict[str, Any]) -> tuple[Any, ...]:
        """Updates with the same key replace each other while not sent (the page keeps the latest)."""
        kind = u.get("t")
        if kind in ("health", "levels", "diag"):
            return (kind, u.get({"health": "tool", "levels": "level", "diag": "name"}[kind]))
        if kind in ("tool", "guard", "arm", "plan", "training"):
            return (kind,)
        self._seq += 1
        return (kind, self._seq)

    def _schedule_flush(self) -> None:
        """(loop) First update of a batch: send now, or when ``send_interval_s`` since the last frame allows."""
        loop = self._loop
        due = self._last_send + self.send_interval_s
        if loop.time() >= due:  # type: ignore[union-attr]
            self._flush()
        else:
            loop.call_at(due, self._flush)  # type: ignore[union-attr]

    def _flush(self) -> None:
        with self._lock:
            batch, covers = list(self._pending.values()), self._covers
            self._pending, self._covers = {}, []
            self._wake_scheduled = False
        if not batch or not self._clients:
            return
        sent_s = time.time()
        out = []
        for u in batch:
            if u.get("t") == "tool":
                # server send time: splits the page's latency into ROS+server / WebSocket+page
                u = {**u, "sent_s": sent_s}
                if covers:
                    u["covers_s"] = covers
            out.append(u)
        self._last_send = self._loop.time()  # type: ignore[union-attr]
        broadcast(self._clients, dumps(out))
        self.stats["frames_sent"] += 1

    def stream_ages_s(self) -> dict[str, float | None]:
        now = time.monotonic()
        return {k: (now - self._last_seen[k]) if k in self._last_seen else None for k in LIVE_KINDS}

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.beat_period_s)
            if self._clients:
                msg = dumps([{"t": "beat", "ages_s": self.stream_ages_s(),
                                   "server_time_s": time.time()}])
                broadcast(self._clients, msg)

    # ---- WebSocket ------------------------------------------------------------------------------
    async def _ws_handler(self, ws: ServerConnection) -> None:
        self._clients.add(ws)
        try:
            with self._lock:
                snapshot = self.state.snapshot()
            await ws.send(dumps(snapshot + [
                {"t": "beat", "ages_s": self.stream_ages_s(), "server_time_s": time.time()}]))
            async for raw in ws:
                reply = await self._handle_client_message(raw)
                await ws.send(dumps([reply]))
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(ws)

    async def _handle_client_message(self, raw: str | bytes) -> dict[str, Any]:
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            self.stats["client_errors"] += 1
            return {"t": "error", "error": f"malformed message (not JSON): {exc}"}
        if not isinstance(msg, dict) or not isinstance(msg.get("req"), str):
            self.stats["client_errors"] += 1
            return {"t": "error", "error": "malformed message: expected an object with a string 'req'"}
        req = msg["req"]
        if req == "ping":
            return {"t": "pong", "server_time_s": time.time(), "echo": msg.get("echo")}
        if req == "select_screw":
            sid = msg.get("screw_id")
            if not isinstance(sid, str) or not sid:
                self.stats["client_errors"] += 1
                return {"t": "error", "error": "select_screw: 'screw_id' must be a non-empty string"}
            if self.request_handler is None:
                return {"t": "reply", "req": req, "ok": False, "message": "no stack connected"}
            try:
                result = await asyncio.to_thread(self.request_handler, msg)
            except Exception as exc:  # a failing handler must not take the server down
                log.warning("request %s failed: %s", req, exc)
                return {"t": "reply", "req": req, "ok": False, "message": str(exc)}
            return {"t": "reply", "req": req, **result}
        self.stats["client_errors"] += 1
        return {"t": "error", "error": f"unknown request {req!r}"}

    # ---- HTTP -------------------------------------------------------------------------------------
    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path == "/ws":
            return None  # WebSocket handshake
        self.stats["http_requests"] += 1
        q = parse_qs(parts.query)
        try:
            if parts.path in STATIC_FILES:
                name, ctype = STATIC_FILES[parts.path]
                path = STATIC_DIR / name
                if not path.is_file():
                    return _text(404, f"{name} not built (run `make setup` or `npm --prefix web run build`)")
                return _response(200, path.read_bytes(), ctype)
            if parts.path == "/api/case":
                return _json(self.case.info())
            if parts.path == "/api/status":
                return _json({"pages": len(self._clients), "ages_s": self.stream_ages_s()})
            if parts.path == "/api/slice":
                vol = q.get("vol", [""])[0]
                axis = q.get("axis", [""])[0]
                point = [_float_param(q, k) for k in ("x", "y", "z")]
                sl = await asyncio.to_thread(self.case.slice, vol, axis, point)
                return _response(200, sl.to_bytes(), "application/octet-stream")
            if parts.path == "/api/surface":
                vol = q.get("vol", [""])[0]
                iso = _float_param(q, "iso") if "iso" in q else 500.0
                blob = await asyncio.to_thread(self.case.surface, vol, iso)
                return _response(200, blob, "application/octet-stream")
        except CaseError as exc:
            return _text(exc.status, str(exc))
        except Exception as exc:  # a broken file must not take the server down
            log.warning("request %s failed: %s", request.path, exc)
            return _text(500, f"{parts.path}: {exc}")
        return _text(404, f"{parts.path}: no such page or endpoint")
