"""Fill in the site's addresses in the discovery profiles of ``config/dds/`` (Fast DDS XML).

- ``multicast_interface.xml``: multicast discovery on one chosen interface (its address).
- ``unicast_peers.xml``: unicast discovery only, to a fixed list of peer hosts; no multicast.

``python -m spine_nav.nodes.dds_profiles multicast 10.0.0.12`` or
``python -m spine_nav.nodes.dds_profiles unicast OWN_ADDRESS PEER [PEER ...]`` prints the XML.
See docs/network.md for what each profile does and does not keep out.
"""
from __future__ import annotations

import ipaddress
import sys
from typing import Sequence

from spine_nav.resources import share_path

DDS_DIR = share_path("config", "dds")


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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(argv) == 2 and argv[0] == "multicast":
            print(multicast_profile(argv[1]), end="")
            return 0
        if len(argv) >= 3 and argv[0] == "unicast":
            print(unicast_profile(argv[1], argv[2:]), end="")
            return 0
    except ValueError as exc:
        print(f"dds_profiles: {exc}", file=sys.stderr)
        return 2
    print("usage: python -m spine_nav.nodes.dds_profiles multicast ADDRESS | unicast OWN_ADDRESS PEER [PEER ...]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
