"""A virtual operating-room LAN on this machine: one Linux network namespace per host, joined by a bridge.

Topology (``VirtualLan(["tracker", "navigation", "robot", "console"])``)::

    netns <tag>-tracker     netns <tag>-navigation   netns <tag>-robot      netns <tag>-console
      eth0 10.<a>.<b>.11      eth0 10.<a>.<b>.12       eth0 10.<a>.<b>.13     eth0 10.<a>.<b>.14
        |  (veth pair)          |                        |                      |
    ----+-----------------------+------------------------+----------------------+----  br0 in netns <tag>-lan
                                    (no physical interface anywhere: nothing leaves the machine)

Every host namespace has its own loopback, one veth end ``eth0`` with an address on the LAN's /24 and
a route for multicast (224.0.0.0/4) on it (DDS discovery). The other veth end sits in the LAN
namespace, enslaved to the bridge ``br0``; :meth:`VirtualLan.cut` sets that end down (the cable
pulled at the switch: the host sees NO-CARRIER, sockets survive) and :meth:`VirtualLan.restore` sets
it up again.

Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN for ``ip netns``): :func:`check_permitted` raises
:class:`NetnsNotPermitted` with the reason, never falls back silently.

:meth:`VirtualLan.delay` adds latency to one host's cable, each way, without ``tc netem`` (this
kernel has no sch_netem): the host's bridge port leaves the bridge and a user-space layer-2
forwarder (:func:`delay_link_main`, raw ``AF_PACKET`` sockets in the LAN namespace) carries every
frame between that port and a new veth pair into the bridge, ``ms`` after it arrived, in order.

Processes are put into a host with ``ip netns exec`` (:meth:`VirtualLan.exec_prefix`); a thread of
this process can enter one with :func:`enter_netns` (``setns(2)`` is per thread for network
namespaces; sockets keep the namespace they were created in).
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"


class NetnsNotPermitted(RuntimeError):
    """This machine or user cannot create network namespaces (not root, no `ip`, or a sandbox)."""


def _run(cmd: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20.0)
    if check and res.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res


def check_permitted() -> None:
    """Raise :class:`NetnsNotPermitted` naming why virtual hosts cannot be made here."""
    if shutil.which("ip") is None:
        raise NetnsNotPermitted("`ip` (iproute2) is not installed: apt-get install iproute2")
    if os.geteuid() != 0:
        raise NetnsNotPermitted(f"network namespaces need root (running as uid {os.geteuid()}); "
                                "run as root (as CI does) or use the ordinary `spine-nav demo`")
    probe = f"snav-probe-{os.getpid()}"
    res = _run(["ip", "netns", "add", probe], check=False)
    if res.returncode != 0:
        raise NetnsNotPermitted(f"`ip netns add` refused: {res.stderr.strip()}")
    try:  # processes start through `ip netns exec`, which remounts / and /sys: a chroot refuses that
        res = _run(["ip", "netns", "exec", probe, "true"], check=False)
        if res.returncode != 0:
            raise NetnsNotPermitted(f"`ip netns exec` refused: {res.stderr.strip()} (a chroot or a container "
                                    "without its own mount namespace cannot run processes in a namespace)")
    finally:
        _run(["ip", "netns", "del", probe], check=False)


@dataclass
class VirtualLan:
    """Hosts on one bridged /24 (``10.<subnet_a>.<subnet_b>.0/24``); use as a context manager.

    ``tag`` prefixes every namespace name (keep it unique per concurrent run, <= 8 characters).
    """

    hosts: Sequence[str]
    tag: str = "snav"
    subnet: tuple[int, int] = (200, 0)
    first_host: int = 11
    up: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.hosts = tuple(self.hosts)
        if len(set(self.hosts)) != len(self.hosts):
            raise ValueError(f"VirtualLan: host names must be unique, got {self.hosts}")
        for h in self.hosts:
            if not h.isalnum() or len(h) > 10:
                raise ValueError(f"VirtualLan: host name {h!r} must be alphanumeric, <= 10 characters")

    # ------------------------------------------------------------------ names
    @property
    def lan_ns(self) -> str:
        return f"{self.tag}-lan"

    def ns(self, host: str) -> str:
        self._known(host)
        return f"{self.tag}-{host}"

    def ip(self, host: str) -> str:
        self._known(host)
        a, b = self.subnet
        return f"10.{a}.{b}.{self.first_host + self.hosts.index(host)}"

    @property
    def cidr(self) -> str:
        a, b = self.subnet
        return f"10.{a}.{b}.0/24"

    def _port(self, host: str) -> str:
        return f"p{self.hosts.index(host)}-{host}"[:15]

    def _known(self, host: str) -> None:
        if host not in self.hosts:
            raise ValueError(f"unknown host {host!r} (hosts: {', '.join(self.hosts)})")

    def exec_prefix(self, host: str) -> list[str]:
        """Prefix a command with this to run it in ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host)]

    # ------------------------------------------------------------------ lifecycle
    def create(self) -> "VirtualLan":
        check_permitted()
        self.destroy()  # leftovers of a killed run with the same tag
        try:
            _run(["ip", "netns", "add", self.lan_ns])
            _run(["ip", "-n", self.lan_ns, "link", "add", "br0", "type", "bridge"])
            _run(["ip", "-n", self.lan_ns, "link", "set", "br0", "up"])
            _run(["ip", "-n", self.lan_ns, "link", "set", "lo", "up"])
            for host in self.hosts:
                ns, port = self.ns(host), self._port(host)
                _run(["ip", "netns", "add", ns])
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
                # the veth pair is made inside the LAN namespace, then one end moves to the host
                _run(["ip", "-n", self.lan_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                      "netns", ns])
                _run(["ip", "-n", self.lan_ns, "link", "set", port, "master", "br0"])
                _run(["ip", "-n", self.lan_ns, "link", "set", port, "up"])
                _run(["ip", "-n", ns, "addr", "add", f"{self.ip(host)}/24", "dev", "eth0"])
                _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
                _run(["ip", "-n", ns, "link", "set", "eth0", "multicast", "on"])
                _run(["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])
        except Exception:
            self.destroy()
            raise
        self.up = True
        return self

    def destroy(self) -> None:
        """Stop every process still in a namespace of this tag (SIGTERM, SIGKILL after 5 s: leftovers of a
        killed run, which would otherwise keep running in an unnamed namespace), then delete the
        namespaces (their veth ends go with them); quiet if absent."""
        names = [n for n in [self.lan_ns, *(f"{self.tag}-{h}" for h in self.hosts)]
                 if os.path.exists(os.path.join(NETNS_DIR, n))]
        pids = {int(p) for n in names for p in _run(["ip", "netns", "pids", n], check=False).stdout.split()
                if p.isdigit() and int(p) != os.getpid()}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5.0
            while pids and time.monotonic() < deadline:
                pids = {p for p in pids if os.path.exists(f"/proc/{p}") and not _zombie(p)}
                time.sleep(0.05)
            if not pids:
                break
        for name in names:
            _run(["ip", "netns", "del", name], check=False)
        self.up = False

    def __enter__(self) -> "VirtualLan":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # ------------------------------------------------------------------ faults
    def cut(self, host: str) -> None:
        """Pull ``host``'s cable at the switch (its bridge port down)."""
        _run(["ip", "-n", self.lan_ns, "link", "set", self._port(host), "down"])

    def restore(self, host: str) -> None:
        _run(["ip", "-n", self.lan_ns, "link", "set", self._port(host), "up"])

    def delay(self, host: str, ms: float, log_path: str | None = None) -> subprocess.Popen:
        """Add ``ms`` milliseconds each way on ``host``'s cable for the rest of this LAN's life; returns the
        forwarder process once frames flow through it (or raises). Stopping that process leaves the host
        cut off (its port stays out of the bridge) until :meth:`destroy`.

        The host's bridge port leaves ``br0``; a veth pair ``d<i>-host`` (in br0) / ``q<i>-host`` takes
        its place and :func:`delay_link_main` (a process in the LAN namespace) forwards each frame between
        the port and ``q<i>-host`` ``ms`` later. Every host's eth0 computes its checksums in software
        (offloads off): a frame copied through a packet socket must carry a complete checksum.
        """
        if not 0.0 <= ms <= 1000.0:
            raise ValueError(f"delay({host!r}, {ms}): ms must be in 0-1000")
        i, port = self.hosts.index(host), self._port(host)
        to_br, fwd = f"d{i}-{host}"[:15], f"q{i}-{host}"[:15]
        for h in self.hosts:
            with enter_netns(self.ns(h)):
                set_tx_offloads("eth0", False)
        lan = ["ip", "-n", self.lan_ns, "link"]
        _run(lan + ["add", to_br, "type", "veth", "peer", "name", fwd])
        with enter_netns(self.lan_ns):  # frames leaving through the forwarder are re-checksummed nowhere
            for dev in (to_br, fwd):
                set_tx_offloads(dev, False)
        _run(lan + ["set", to_br, "master", "br0"])
        for dev in (to_br, fwd, port):
            _run(lan + ["set", dev, "up", "promisc", "on"])
        _run(lan + ["set", port, "nomaster"])
        out = open(log_path, "w") if log_path else subprocess.DEVNULL
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
             os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(["ip", "netns", "exec", self.lan_ns, sys.executable, "-m", "spine_nav.sim.netns",
                                 "delay-link", port, fwd, str(ms)], stdout=subprocess.PIPE, stderr=out, env=env,
                                text=True)
        ready = select.select([proc.stdout], [], [], 60.0)[0] and proc.stdout.readline().strip() == "ready"
        if not ready:
            proc.kill()
            raise RuntimeError(f"delay({host!r}, {ms}): the forwarder did not start (exit {proc.poll()})")
        return proc

    def link_up(self, host: str) -> bool:
        res = _run(["ip", "-n", self.lan_ns, "-o", "link", "show", self._port(host)], check=False)
        return "state UP" in res.stdout or ",UP," in res.stdout.split(">")[0]

    def counters(self, host: str) -> dict[str, int]:
        """Packets and bytes through ``host``'s eth0 (rx/tx, its own view), from /sys in its namespace."""
        out = {}
        for key in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes"):
            res = _run(self.exec_prefix(host) + ["cat", f"/sys/class/net/eth0/statistics/{key}"], check=False)
            out[key] = int(res.stdout.strip() or 0)
        return out


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM, ETHTOOL_SSG, ETHTOOL_STSO, ETHTOOL_SGSO = 0x17, 0x19, 0x1F, 0x24


def set_tx_offloads(dev: str, on: bool) -> None:
    """``ethtool -K dev tx on|off tso on|off gso on|off sg on|off`` in the calling thread's namespace, by the
    SIOCETHTOOL ioctl (no ethtool binary needed). Off: the kernel fills in every checksum and hands out
    frames no larger than the MTU, as a packet socket needs to copy them to another device."""
    buf = ctypes.create_string_buffer(8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for cmd in ((ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SSG, ETHTOOL_STXCSUM) if not on else
                    (ETHTOOL_STXCSUM, ETHTOOL_SSG, ETHTOOL_STSO, ETHTOOL_SGSO)):
            struct.pack_into("II", buf, 0, cmd, int(on))
            ifreq = struct.pack("16sP", dev.encode(), ctypes.addressof(buf)) + b"\0" * 16
            try:
                fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
            except OSError as exc:
                raise RuntimeError(f"set_tx_offloads({dev!r}, {on}): SIOCETHTOOL {cmd:#x} failed: {exc}") from exc


SOL_PACKET, PACKET_IGNORE_OUTGOING = 263, 23
ETH_P_ALL = 0x0003


def delay_link_main(dev_a: str, dev_b: str, ms: float, max_duration_s: float = 6 * 3600.0,
                    rt_priority: int = 50) -> int:
    """Forward every Ethernet frame between ``dev_a`` and ``dev_b`` (both ways) ``ms`` after it arrived,
    in arrival order, until SIGTERM/SIGINT; prints ``ready`` once both sockets are bound, and the frame
    counts on stderr at the end. A frame that cannot be sent (that side down: a cut) is dropped, as on
    a cable. Not a shaper: bandwidth and loss are untouched.

    The forwarder stands for a cable, so it must not be the one starved of CPU: it runs SCHED_FIFO at
    ``rt_priority`` (above the stack's realtime threads, 30) when permitted, and says so on stderr when not."""
    delay_s = ms / 1000.0
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_priority))
    except (OSError, AttributeError) as exc:
        print(f"delay-link: not realtime ({exc}); frames may wait for CPU on a loaded machine", file=sys.stderr,
              flush=True)
    socks = {}
    for dev in (dev_a, dev_b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root): past rmem_max, no drops in bursts
        s.bind((dev, 0))
        s.setblocking(False)
        socks[dev] = s
    sa, sb = socks[dev_a], socks[dev_b]
    other = {sa: sb, sb: sa}
    queue: dict[socket.socket, deque] = {sa: deque(), sb: deque()}  # frames to send ON that socket
    counts = {dev_a: 0, dev_b: 0}
    dropped = 0
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    print("ready", flush=True)
    t_end = time.monotonic() + max_duration_s
    while not stop and time.monotonic() < t_end:
        now = time.monotonic()
        due = [q[0][0] for q in queue.values() if q]
        timeout = max(0.0, min(due) - now) if due else 0.2
        try:
            readable = select.select([sa, sb], [], [], min(timeout, 0.2))[0]
        except InterruptedError:
            continue
        now = time.monotonic()
        for s in readable:
            while True:
                try:
                    frame, addr = s.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # the device went down under us (a cut): read again after select
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                queue[other[s]].append((now + delay_s, frame))
        now = time.monotonic()
        for s, q in queue.items():
            while q and q[0][0] <= now:
                frame = q.popleft()[1]
                try:
                    s.send(frame)
                    counts[dev_a if s is sa else dev_b] += 1
                except OSError:
                    dropped += 1
    print(f"delay-link {dev_a}<->{dev_b} {ms:g} ms: frames out on {dev_a} {counts[dev_a]}, on {dev_b} "
          f"{counts[dev_b]}, dropped {dropped}", file=sys.stderr, flush=True)
    return 0


_libc = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def enter_netns(name: str) -> Iterator[None]:
    """Run the body with the calling THREAD in network namespace ``name`` (sockets made here stay there)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "delay-link":
        sys.exit(delay_link_main(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    print("usage: python -m spine_nav.sim.netns delay-link DEV_A DEV_B MS   (in the LAN namespace)", file=sys.stderr)
    sys.exit(2)
