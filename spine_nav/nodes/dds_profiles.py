"""Fill in the site's addresses in the discovery profiles of ``config/dds/`` (Fast DDS XML).

- ``multicast_interface.xml``: multicast discovery on one chosen interface (its address).
- ``unicast_peers.xml``: unicast discovery only, to a fixed list of peer hosts; no multicast.
- ``config/firewall/spine_nav.nft``: the allow-list DDS itself cannot give (nftables: DDS and
  OpenIGTLink admitted only from the OR hosts).

``python -m spine_nav.nodes.dds_profiles multicast 10.0.0.12`` or
``python -m spine_nav.nodes.dds_profiles unicast OWN_ADDRESS PEER [PEER ...]`` prints the XML;
``python -m spine_nav.nodes.dds_profiles firewall DOMAIN HOST [HOST ...]`` prints the nftables rules.
See docs/network.md for what each profile does and does not keep out.
"""
from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Sequence

DDS_DIR = Path(__file__).resolve().parents[2] / "config" / "dds"
FIREWALL = DDS_DIR.parent / "firewall" / "spine_nav.nft"
#: RTPS well-known ports (DDSI-RTPS 2.x, 9.6.1.1; Fast DDS defaults): PB + DG * domain + offsets
#: d0 = 0, d1 = 10, d2 = 1, d3 = 11 + PG * participant id (PG = 2): 250 ports per domain.
RTPS_PORT_BASE, RTPS_DOMAIN_GAIN = 7400, 250
IGTL_DEFAULT_PORT = 18944


def _ipv4(text: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not an IPv4 address") from None


def multicast_profile(interface_address: str) -> str:
    """``config/dds/multicast_interface.xml`` restricted to the interface with this IPv4 address."""
    xml = (DDS_DIR / "multicast_interface.xml").read_text()
    return xml.replace("@INTERFACE_ADDRESS@", _ipv4(interface_address, "interface address"))


def unicast_profile(own_address: str, peers: Sequence[str]) -> str:
    """``config/dds/unicast_peers.xml``: listen on ``own_address``, announce only to ``peers``."""
    if not peers:
        raise ValueError("unicast profile: at least one peer address is needed")
    loc = "\n".join(f"            <locator><udpv4><address>{_ipv4(p, 'peer')}</address></udpv4></locator>"
                    for p in peers)
    xml = (DDS_DIR / "unicast_peers.xml").read_text()
    return xml.replace("@OWN_ADDRESS@", _ipv4(own_address, "own address")).replace("@INITIAL_PEERS@", loc)


def dds_port_range(domain: int) -> tuple[int, int]:
    """First and last UDP port RTPS uses on ``domain`` (0-232, as ROS_DOMAIN_ID)."""
    if not 0 <= int(domain) <= 232:
        raise ValueError(f"domain {domain!r}: ROS_DOMAIN_ID must be 0-232")
    first = RTPS_PORT_BASE + RTPS_DOMAIN_GAIN * int(domain)
    return first, first + RTPS_DOMAIN_GAIN - 1


def firewall_rules(domain: int, or_hosts: Sequence[str], igtl_ports: Sequence[int] = (IGTL_DEFAULT_PORT,)) -> str:
    """``config/firewall/spine_nav.nft`` for this domain: DDS (``domain``'s RTPS ports) and OpenIGTLink
    (``igtl_ports``) admitted only from ``or_hosts`` (IPv4 addresses or networks) and loopback."""
    if not or_hosts:
        raise ValueError("firewall: at least one OR host address is needed")
    nets = []
    for h in or_hosts:
        try:
            nets.append(str(ipaddress.IPv4Network(h.strip(), strict=False)).removesuffix("/32"))
        except ValueError:
            raise ValueError(f"firewall: OR host {h!r} is not an IPv4 address or network") from None
    ports = []
    for p in igtl_ports:
        if not 1 <= int(p) <= 65535:
            raise ValueError(f"firewall: OpenIGTLink port {p!r} is not 1-65535")
        ports.append(str(int(p)))
    first, last = dds_port_range(domain)
    return (FIREWALL.read_text().replace("@OR_HOSTS@", ", ".join(nets)).replace("@DDS_PORTS@", f"{first}-{last}")
            .replace("@IGTL_PORTS@", ", ".join(ports)))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(argv) == 2 and argv[0] == "multicast":
            print(multicast_profile(argv[1]), end="")
            return 0
        if len(argv) >= 3 and argv[0] == "unicast":
            print(unicast_profile(argv[1], argv[2:]), end="")
            return 0
        if len(argv) >= 3 and argv[0] == "firewall":
            try:
                domain = int(argv[1])
            except ValueError:
                raise ValueError(f"firewall: DOMAIN {argv[1]!r} is not an integer") from None
            print(firewall_rules(domain, argv[2:]), end="")
            return 0
    except ValueError as exc:
        print(f"dds_profiles: {exc}", file=sys.stderr)
        return 2
    print("usage: python -m spine_nav.nodes.dds_profiles multicast ADDRESS | unicast OWN_ADDRESS PEER [PEER ...] | "
          "firewall DOMAIN HOST [HOST ...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
