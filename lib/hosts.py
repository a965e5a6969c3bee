"""Which hosts a router may send vendor credentials to: an allowlist and the private-address rule.

An allowlist entry is a host name pattern (``*`` stands for exactly one DNS label, as in a
TLS certificate: ``*.openai.azure.com``, ``bedrock-runtime.*.amazonaws.com``), an IP address
(``10.0.0.5``, ``::1`` or ``[::1]``) or an IP network (``10.0.0.0/8``). Name patterns never
match IP literals, and ``localhost`` is matched only by the entry ``localhost`` itself, so a
loopback, link-local or private address is allowed only by an entry that names it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def origin(url: str) -> str:
    """Return ``url``'s origin, ``scheme://host[:port]`` with the scheme's default port left out."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"'{url}' has an invalid port") from None
    if not scheme or not host:
        raise ValueError(f"'{url}' is not an absolute URL")
    shown = f"[{host}]" if ":" in host else host
    if port is None or port == DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{shown}"
    return f"{scheme}://{shown}:{port}"


def url_host(url: str) -> str:
    """Return the host of ``url``, lower case, without IPv6 brackets or a trailing dot."""
    return (urlsplit(url.strip()).hostname or "").lower().rstrip(".")


def ip_of(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    return mapped or address


def is_local_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def is_internal(address: IPAddress) -> bool:
    """Loopback, link-local, private, shared or reserved: anything not routable on the internet."""
    return not address.is_global


@dataclass(frozen=True)
class HostPolicy:
    """``patterns`` empty: any host; ``refuse_internal``: internal addresses need an entry naming them."""

    patterns: tuple[str, ...] = ()
    refuse_internal: bool = False
    _names: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names: list[re.Pattern[str]] = []
        networks: list[IPNetwork] = []
        for entry in (p.strip().lower() for p in self.patterns):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                label = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
                names.append(re.compile(r"\.".join(label if p == "*" else re.escape(p) for p in entry.split("."))))
        object.__setattr__(self, "_names", tuple(names))
        object.__setattr__(self, "_networks", tuple(networks))

    def listed(self, host: str) -> bool:
        """Return whether an allowlist entry names ``host``."""
        address = ip_of(host)
        if address is not None:
            return any(address in network for network in self._networks)
        if is_local_name(host):
            return "localhost" in (p.strip().lower() for p in self.patterns)
        return any(name.fullmatch(host) for name in self._names)

    def refusal(self, host: str, addresses: Iterable[str] = ()) -> str | None:
        """Return why ``host`` is refused (``None``: allowed); ``addresses``: what it resolved to, if known."""
        host = host.lower().strip("[]").rstrip(".")
        if not host:
            return "the URL has no host"
        listed = self.listed(host)
        if self.patterns and not listed:
            return f"host '{host}' is not in SIRAYA_VENDOR_HOSTS"
        if self.refuse_internal and not listed and self.internal(host, addresses):
            return (
                f"host '{host}' is a loopback, link-local or private address, refused in production "
                "unless SIRAYA_VENDOR_HOSTS names it"
            )
        return None

    @staticmethod
    def internal(host: str, addresses: Iterable[str] = ()) -> bool:
        address = ip_of(host)
        if address is not None:
            return is_internal(address)
        if is_local_name(host):
            return True
        return any(is_internal(a) for a in map(ip_of, addresses) if a is not None)


def resolve(host: str, timeout: float) -> list[str]:
    """Return the addresses ``host`` resolves to, or none when it does not resolve within ``timeout`` seconds."""
    found: list[str] = []

    def lookup() -> None:
        try:
            found.extend(str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
        except (OSError, UnicodeError):
            pass

    # getaddrinfo has no timeout of its own: a slow resolver leaves a daemon thread behind, not a hung save.
    worker = threading.Thread(target=lookup, name="vendor-host-lookup", daemon=True)
    worker.start()
    worker.join(timeout)
    return list(found) if not worker.is_alive() else []
