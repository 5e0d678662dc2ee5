"""Where the service may send requests on a tenant's behalf (webhook URLs, tracker URIs): http(s) only, and on a
shared deployment never a loopback, private, link-local or otherwise non-public address, which would let a tenant
reach the metadata service, the database or the admin ports behind the firewall (SSRF).

Checked when the URL is registered and again by the worker before every request, after resolving the name, so a
DNS answer that changes later (rebinding) is caught at send time too.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class TargetError(ValueError):
    pass


def check_url(url: str, allow_private: bool, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """The URL's host, or TargetError saying why the service must not call it."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number
    except ValueError as exc:
        raise TargetError(f"not a valid URL: {exc}") from None
    if parts.scheme not in schemes:
        raise TargetError(f"the scheme must be {' or '.join(schemes)}, not {parts.scheme or 'missing'!r}")
    if parts.scheme == "file":
        if not allow_private:
            raise TargetError(
                "file: URIs write on the workers' disks; this deployment allows only remote trackers "
                "(UDS_ALLOW_PRIVATE_TARGETS)"
            )
        return ""
    host = parts.hostname
    if not host:
        raise TargetError("the URL has no host")
    if not allow_private:
        for address in resolve(host, port):
            if not ipaddress.ip_address(address).is_global:
                raise TargetError(
                    f"{host} is a loopback, private or reserved address ({address}); this deployment "
                    "sends only to public addresses (UDS_ALLOW_PRIVATE_TARGETS)"
                )
    return host


def resolve(host: str, port: int | None) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetError(f"the host {host!r} does not resolve ({exc})") from None
    # An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is judged as the IPv4 address it carries.
    addresses = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])  # the host of an AF_INET/AF_INET6 sockaddr
        mapped = getattr(address, "ipv4_mapped", None)
        addresses.append(str(mapped or address))
    return addresses
