"""OpenIGTLink over TCP: client (connect, reconnect with backoff) and server (accept many peers).

Why our own transport and not pyigtl's ``OpenIGTLinkClient``/``OpenIGTLinkServer`` (measured in
``spine-nav bench bridge``, baseline ``pyigtl``): pyigtl keeps only the *latest* message per device
(intermediate samples are silently replaced), polls with a 10 ms socket timeout, sets no
TCP_NODELAY, installs signal handlers in its server constructor (main thread only) and drops TDATA
and STATUS on receive. Here every connection has one reader thread with TCP_NODELAY that decodes
the stream (:class:`~spine_nav.tracking.codec.StreamDecoder`) and hands *every* message to a
callback, stamped with the receive time (``time.perf_counter_ns()`` right after ``recv``); a consumer may
offer an ``on_chunk`` fast path that takes a whole ``recv()`` chunk first (the tracker bridge's 1 kHz
TRANSFORM frames, :meth:`spine_nav.tracking.bridge.BridgeCore.take_chunk`) and declines anything else. There is
no queue to overflow: back-pressure is TCP's. Malformed input is counted per kind, logged once per
kind and peer, and skipped; the connection stays up.

Who may connect (OpenIGTLink has neither authentication nor encryption): a server accepts only peers
in ``allowed_peers`` (addresses or networks, default loopback only, :data:`LOOPBACK_PEERS`) and logs
every refused connection with its address; a client connects only to its configured ``host:port``
and never listens. See docs/network.md.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections import Counter
from typing import Callable, Iterator, Sequence

from spine_nav.tracking.codec import DEFAULT_MAX_BODY_BYTES, DecodeError, IgtlMessage, StreamDecoder

DEFAULT_PORT = 18944
#: a server's default allow-list: this machine only
LOOPBACK_PEERS = ("127.0.0.0/8", "::1")

PeerNetworks = tuple["ipaddress.IPv4Network | ipaddress.IPv6Network", ...]


def parse_allowed_peers(spec: "str | Sequence[str] | None") -> PeerNetworks:
    """``"10.0.0.12, 10.0.0.0/24"`` or a list of such -> networks. ``None`` -> loopback only;
    ``"*"`` (alone) -> anyone (0.0.0.0/0 and ::/0, explicit opt-out). Raises ValueError naming a bad entry."""
    if spec is None:
        spec = LOOPBACK_PEERS
    items = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec) if str(t).strip()]
    if items == ["*"]:
        items = ["0.0.0.0/0", "::/0"]
    if not items:
        raise ValueError("allowed_peers: empty (nobody could connect); give addresses or networks, e.g. 127.0.0.1")
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ValueError(f"allowed_peers: {item!r} is not an IP address or network (e.g. 10.0.0.12 or "
                             "10.0.0.0/24)") from None
    return tuple(out)


def peer_allowed(address: str, networks: PeerNetworks) -> bool:
    """Is ``address`` (as ``accept()`` gives it; IPv4-mapped IPv6 counts as IPv4) in one of ``networks``?"""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in networks)


def accept_allowed(lsock: socket.socket, allowed: PeerNetworks, stop: threading.Event,
                   on_refused: Callable[[tuple], None]) -> Iterator[tuple[socket.socket, tuple]]:
    """Accept on ``lsock`` (which has a timeout) until ``stop`` is set or it closes; yields allowed peers'
    ``(socket, address)``; a peer outside ``allowed`` is reported to ``on_refused(address)`` and closed."""
    while not stop.is_set():
        try:
            sock, addr = lsock.accept()
        except socket.timeout:
            continue
        except OSError:
            break
        if not peer_allowed(addr[0], allowed):
            on_refused(addr)
            try:
                sock.close()
            except OSError:
                pass
            continue
        yield sock, addr


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now (for servers that tests, benches and the demo start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
log = logging.getLogger("spine_nav.tracking")

#: on_message(message, receive time perf_counter_ns, connection)
MessageCallback = Callable[[IgtlMessage, int, "IgtlConnection"], None]
ErrorCallback = Callable[[DecodeError, "IgtlConnection"], None]
#: on_chunk_end(connection): every message of one ``recv()`` has been handed on (same thread)
ChunkCallback = Callable[["IgtlConnection"], None]
#: on_chunk(data, receive time perf_counter_ns, connection) -> messages handled: a fast path offered the whole
#: ``recv()`` chunk first (only when the decoder holds no partial message). 0 = not taken and nothing changed:
#: the chunk then goes through the decoder and ``on_message`` as usual. Either way ``on_chunk_end`` follows.
FastChunkCallback = Callable[[bytes, int, "IgtlConnection"], int]


class IgtlConnection:
    """One TCP peer: a reader thread feeding a decoder, and a locked ``send``."""

    def __init__(self, sock: socket.socket, peer: str, on_message: MessageCallback | None,
                 on_error: ErrorCallback | None = None, on_close: Callable[["IgtlConnection"], None] | None = None,
                 on_chunk_end: ChunkCallback | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, send_timeout_s: float = 1.0,
                 on_chunk: FastChunkCallback | None = None) -> None:
        self.sock, self.peer = sock, peer
        self.on_message, self.on_error, self.on_close = on_message, on_error, on_close
        self.on_chunk_end, self.on_chunk = on_chunk_end, on_chunk
        self.decoder = StreamDecoder(max_body_bytes)
        self.send_timeout_s = send_timeout_s
        self.messages_received = 0
        self.bytes_received = 0
        self.errors: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._read_loop, name=f"igtl-{peer}", daemon=True)

    def start(self) -> "IgtlConnection":
        self._thread.start()
        return self

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait_closed(self, timeout_s: float | None = None) -> bool:
        """Block until the connection is closed (by :meth:`close`, or the reader when the peer goes); True if it is."""
        return self._closed.wait(timeout_s)

    def _report(self, err: DecodeError) -> None:
        self.errors[err.kind] += 1
        if err.kind not in self._logged:  # once per kind and peer
            self._logged.add(err.kind)
            log.warning("OpenIGTLink from %s: dropped malformed message (%s: %s); further '%s' counted only",
                        self.peer, err.kind, err.detail, err.kind)
        if self.on_error is not None:
            self.on_error(err, self)

    def _read_loop(self) -> None:
        # the decoder's at_message_boundary, read once after each feed() instead of per chunk (a property call in the
        # 1 kHz frame's latency span); only this thread feeds the decoder, and the fast path leaves it untouched
        at_boundary = True
        try:
            while not self._closed.is_set():
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    break
                t_ns = time.perf_counter_ns()
                if not data:
                    break
                self.bytes_received += len(data)
                fast = self.on_chunk
                if fast is not None and at_boundary:
                    try:
                        taken = fast(data, t_ns, self)
                    except Exception:  # noqa: BLE001 - as on_message: a consumer bug must not kill the connection
                        log.exception("OpenIGTLink from %s: chunk handler failed", self.peer)
                        taken = -1  # the chunk counts as handled: it must not be handled twice
                    if taken:
                        self.messages_received += max(taken, 0)
                        self._chunk_end()
                        continue
                for item in self.decoder.feed(data):
                    if isinstance(item, DecodeError):
                        self._report(item)
                        continue
                    self.messages_received += 1
                    if self.on_message is not None:
                        try:
                            self.on_message(item, t_ns, self)
                        except Exception:  # a consumer bug must not kill the connection
                            log.exception("OpenIGTLink from %s: message handler failed on %s %r",
                                          self.peer, item.type, item.device)
                at_boundary = self.decoder.at_message_boundary
                self._chunk_end()
        finally:
            tail = self.decoder.close()
            if tail is not None:
                self._report(tail)
            self.close()

    def _chunk_end(self) -> None:
        if self.on_chunk_end is not None:
            try:
                self.on_chunk_end(self)
            except Exception:  # noqa: BLE001 - as on_message
                log.exception("OpenIGTLink from %s: chunk-end handler failed", self.peer)

    def send(self, data: bytes) -> bool:
        """Send one or more packed messages; False (and the connection closed) if the peer is gone."""
        if self._closed.is_set():
            return False
        with self._send_lock:
            try:
                self.sock.settimeout(self.send_timeout_s)
                self.sock.sendall(data)
                return True
            except OSError as exc:
                log.warning("OpenIGTLink to %s: send failed (%s); closing", self.peer, exc)
                self.close()
                return False
            finally:
                if not self._closed.is_set():
                    try:
                        self.sock.settimeout(0.2)
                    except OSError:
                        pass

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.on_close is not None:
            self.on_close(self)

    def join(self, timeout_s: float = 2.0) -> None:
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)


class IgtlClient:
    """Connects to ``host:port`` and keeps reconnecting with exponential backoff (0.1 s doubling to 2 s).

    ``on_connect(conn)`` runs after every (re)connection, e.g. to send STT_TDATA.
    """

    def __init__(self, host: str, port: int, on_message: MessageCallback | None,
                 on_error: ErrorCallback | None = None, on_connect: Callable[[IgtlConnection], None] | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, backoff_s: tuple[float, float] = (0.1, 2.0),
                 on_chunk_end: ChunkCallback | None = None, on_chunk: FastChunkCallback | None = None) -> None:
        self.host, self.port = host, int(port)
        self.on_message, self.on_error, self.on_connect = on_message, on_error, on_connect
        self.on_chunk_end, self.on_chunk = on_chunk_end, on_chunk
        self.max_body_bytes, self.backoff_s = max_body_bytes, backoff_s
        self.connection: IgtlConnection | None = None
        self.connects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"igtl-client-{host}:{port}", daemon=True)
        self._connected = threading.Event()

    def start(self) -> "IgtlClient":
        self._thread.start()
        return self

    def wait_connected(self, timeout_s: float = 5.0) -> bool:
        return self._connected.wait(timeout_s)

    def _run(self) -> None:
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1.0)
            except OSError as exc:
                log.info("OpenIGTLink: cannot connect to %s:%d (%s); retry in %.1f s", self.host, self.port, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_s[1])
                continue
            delay = self.backoff_s[0]
            conn = IgtlConnection(sock, f"{self.host}:{self.port}", self.on_message, self.on_error,
                                  max_body_bytes=self.max_body_bytes, on_chunk_end=self.on_chunk_end,
                                  on_chunk=self.on_chunk)
            self.connection = conn
            self.connects += 1
            log.info("OpenIGTLink: connected to %s:%d", self.host, self.port)
            if self.on_connect is not None:
                self.on_connect(conn)
            conn.start()
            self._connected.set()
            if self._stop.is_set():  # close() ran before self.connection was this one, so it could not close it
                conn.close()
            # block until the connection ends (close() closes it; the reader does when the peer goes): no periodic
            # wake-up, which would take the GIL from the reader thread 20 times a second in a 1 kHz stream's process
            conn.wait_closed()
            self._connected.clear()
            conn.close()
            conn.join()
            if not self._stop.is_set():
                log.warning("OpenIGTLink: connection to %s:%d lost; reconnecting", self.host, self.port)

    def send(self, data: bytes) -> bool:
        conn = self.connection
        return conn.send(data) if conn is not None else False

    def close(self) -> None:
        self._stop.set()
        if self.connection is not None:
            self.connection.close()
        if self._thread.is_alive():
            self._thread.join(3.0)


class IgtlServer:
    """Listens on ``host:port`` (default all interfaces, 18944); every *allowed* peer gets an :class:`IgtlConnection`.

    ``allowed_peers``: addresses or networks (see :func:`parse_allowed_peers`; default loopback only).
    A connection from anywhere else is closed at once, counted in ``refused`` and logged (warning)
    with its address.

    ``broadcast(data)`` sends to every connected peer (console output, simulator, replay).
    ``port=0`` picks a free port (read ``.port`` after construction).
    """

    def __init__(self, port: int = DEFAULT_PORT, on_message: MessageCallback | None = None,
                 on_error: ErrorCallback | None = None, on_connect: Callable[[IgtlConnection], None] | None = None,
                 host: str = "0.0.0.0", max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 on_chunk_end: ChunkCallback | None = None,
                 allowed_peers: "str | Sequence[str] | None" = None, on_chunk: FastChunkCallback | None = None) -> None:
        self.on_message, self.on_error, self.on_connect = on_message, on_error, on_connect
        self.on_chunk_end, self.on_chunk = on_chunk_end, on_chunk
        self.max_body_bytes = max_body_bytes
        self.allowed_peers = parse_allowed_peers(allowed_peers)
        #: refused connections: (address, port, time.time())
        self.refused: list[tuple[str, int, float]] = []
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._lsock.bind((host, int(port)))
        except OSError as exc:
            self._lsock.close()
            raise OSError(f"OpenIGTLink server: cannot listen on {host}:{port} ({exc})") from None
        self._lsock.listen(8)
        self._lsock.settimeout(0.2)
        self.host, self.port = host, self._lsock.getsockname()[1]
        self.connections: list[IgtlConnection] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name=f"igtl-server-{self.port}", daemon=True)

    def start(self) -> "IgtlServer":
        self._thread.start()
        return self

    def _refuse(self, addr) -> None:
        self.refused.append((addr[0], int(addr[1]), time.time()))
        log.warning("OpenIGTLink server %d: refused connection from %s:%d (not in allowed_peers %s)",
                    self.port, addr[0], addr[1], ", ".join(str(n) for n in self.allowed_peers))

    def _accept_loop(self) -> None:
        for sock, addr in accept_allowed(self._lsock, self.allowed_peers, self._stop, self._refuse):
            conn = IgtlConnection(sock, f"{addr[0]}:{addr[1]}", self.on_message, self.on_error,
                                  on_close=self._forget, max_body_bytes=self.max_body_bytes,
                                  on_chunk_end=self.on_chunk_end, on_chunk=self.on_chunk)
            with self._lock:
                self.connections.append(conn)
            log.info("OpenIGTLink server %d: %s connected", self.port, conn.peer)
            if self.on_connect is not None:
                self.on_connect(conn)
            conn.start()

    def _forget(self, conn: IgtlConnection) -> None:
        with self._lock:
            if conn in self.connections:
                self.connections.remove(conn)
        log.info("OpenIGTLink server %d: %s disconnected", self.port, conn.peer)

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self.connections)

    def broadcast(self, data: bytes) -> int:
        """Send to every peer; returns how many got it."""
        with self._lock:
            peers = list(self.connections)
        return sum(1 for c in peers if c.send(data))

    def close(self) -> None:
        self._stop.set()
        self._lsock.close()
        if self._thread.is_alive():
            self._thread.join(2.0)
        with self._lock:
            peers = list(self.connections)
        for c in peers:
            c.close()
            c.join()
