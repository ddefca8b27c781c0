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

Processes are put into a host with ``ip netns exec`` (:meth:`VirtualLan.exec_prefix`); a thread of
this process can enter one with :func:`enter_netns` (``setns(2)`` is per thread for network
namespaces; sockets keep the namespace they were created in).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
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
        """Delete every namespace of this tag (their veth ends go with them); quiet if absent."""
        for name in [self.lan_ns, *(f"{self.tag}-{h}" for h in self.hosts)]:
            if os.path.exists(os.path.join(NETNS_DIR, name)):
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
