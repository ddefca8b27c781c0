"""A TCP relay for the simulated tracker PC's network side, with an optional added one-way delay.

In ``spine-nav demo --hosts`` the tracker *model* (the camera, simulation truth) runs in the demo's
world process; this relay, started in the ``tracker`` host's network namespace, is what the
navigation host connects to: it accepts only ``allowed_peers`` (as :class:`IgtlServer` does, refused
peers logged with their address) and forwards bytes both ways to the upstream OpenIGTLink server.

``delay_ms`` holds every chunk for that long in each direction before forwarding it: the user-space
stand-in for ``tc qdisc ... netem delay`` on the tracker link, used because this machine's kernel has
no sch_netem ("Specified qdisc kind is unknown", 2026-12-06). Order is kept; bandwidth is not shaped.

Run: ``python -m spine_nav.sim.igtl_relay --listen 0.0.0.0:18944 --upstream 10.200.38.15:18944
--allow 10.200.38.12 --delay-ms 20`` (until SIGINT/SIGTERM).
"""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
from collections import deque

from spine_nav.tracking.transport import accept_allowed, parse_allowed_peers

log = logging.getLogger("spine_nav.sim.igtl_relay")


class _DelayedPipe:
    """Bytes from ``src`` to ``dst``, each chunk sent ``delay_s`` after it arrived (order kept)."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay_s: float, stop: threading.Event,
                 name: str) -> None:
        self.src, self.dst, self.delay_s, self.stop = src, dst, delay_s, stop
        self.queue: deque[tuple[float, bytes]] = deque()
        self.cond = threading.Condition()
        self.bytes = 0
        self.threads = [threading.Thread(target=self._read, name=f"{name}-rx", daemon=True),
                        threading.Thread(target=self._write, name=f"{name}-tx", daemon=True)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _read(self) -> None:
        self.src.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = self.src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            with self.cond:
                self.queue.append((time.monotonic() + self.delay_s, data))
                self.cond.notify()
        self.stop.set()
        with self.cond:
            self.cond.notify()

    def _write(self) -> None:
        while not self.stop.is_set():
            with self.cond:
                if not self.queue:
                    self.cond.wait(0.2)
                    continue
                due, data = self.queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self.cond.wait(wait)
                    continue
                self.queue.popleft()
            try:
                self.dst.sendall(data)
                self.bytes += len(data)
            except OSError:
                break
        self.stop.set()


class IgtlRelay:
    """Accepts allowed peers on ``listen``; each gets its own upstream connection to ``upstream``."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], allowed_peers=None,
                 delay_ms: float = 0.0) -> None:
        if delay_ms < 0:
            raise ValueError(f"delay_ms: must be >= 0, got {delay_ms:g}")
        self.upstream, self.delay_s = upstream, delay_ms / 1000.0
        self.allowed = parse_allowed_peers(allowed_peers)
        self.refused: list[str] = []
        self.sessions = 0
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(listen)
        self._lsock.listen(8)
        self._lsock.settimeout(0.2)
        self.port = self._lsock.getsockname()[1]
        self._stop = threading.Event()

    def serve(self, until: threading.Event | None = None) -> None:
        for sock, addr in accept_allowed(self._lsock, self.allowed, until or self._stop, self._refuse):
            threading.Thread(target=self._session, args=(sock, addr), daemon=True).start()
        self._lsock.close()

    def _refuse(self, addr) -> None:
        self.refused.append(addr[0])
        log.warning("relay: refused connection from %s:%d (not in allowed_peers)", addr[0], addr[1])

    def _session(self, down: socket.socket, addr) -> None:
        try:
            up = socket.create_connection(self.upstream, timeout=2.0)
        except OSError as exc:
            log.warning("relay: upstream %s:%d unreachable (%s); closing %s", *self.upstream, exc, addr[0])
            down.close()
            return
        self.sessions += 1
        for s in (down, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("relay: %s:%d <-> %s:%d (delay %.0f ms)", addr[0], addr[1], *self.upstream, self.delay_s * 1e3)
        stop = threading.Event()
        pipes = [_DelayedPipe(up, down, self.delay_s, stop, "relay-down"),
                 _DelayedPipe(down, up, self.delay_s, stop, "relay-up")]
        for p in pipes:
            p.start()
        while not stop.is_set() and not self._stop.is_set():
            stop.wait(0.2)
        stop.set()
        for s in (down, up):
            try:
                s.close()
            except OSError:
                pass
        log.info("relay: session with %s:%d ended", addr[0], addr[1])

    def close(self) -> None:
        self._stop.set()


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spine_nav.sim.igtl_relay", description=__doc__.split("\n")[0])
    ap.add_argument("--listen", type=_hostport, required=True)
    ap.add_argument("--upstream", type=_hostport, required=True)
    ap.add_argument("--allow", default=None, help="addresses or networks (default loopback only)")
    ap.add_argument("--delay-ms", type=float, default=0.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        relay = IgtlRelay(args.listen, args.upstream, args.allow, args.delay_ms)
    except (ValueError, OSError) as exc:
        print(f"igtl_relay: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("relay: listening on %s:%d -> %s:%d, delay %.0f ms", args.listen[0], relay.port, *args.upstream,
             args.delay_ms)
    relay.serve(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
