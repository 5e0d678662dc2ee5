"""Where the service may send requests on a tenant's behalf (webhook URLs, tracker URIs): http(s) only, and on a
shared deployment never a loopback, private, link-local or otherwise non-public address, which would let a tenant
reach the metadata service, the database or the admin ports behind the firewall (SSRF).

Checked when the URL is registered and again by the worker before every request, after resolving the name; and
the request then goes to the very address that was checked (`pin`), with the name kept in the Host header and the
TLS server name, so a DNS answer that changes between the check and the connection (rebinding) cannot send it
elsewhere. Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class TargetError(ValueError):
    pass


def check_url(url: str, allow_private: bool, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """The URL's host, or TargetError saying why the service must not call it."""
    return _checked(url, allow_private, schemes)[0]


def pin(url: str, allow_private: bool) -> tuple[str, dict[str, str], dict[str, str]]:
    """(url, headers, httpx extensions) to send an http(s) request to `url` at the address that was checked, or
    TargetError. Where private targets are allowed nothing is refused, so nothing is pinned."""
    host, addresses = _checked(url, allow_private, ("http", "https"))
    if allow_private or not addresses:
        return url, {}, {}
    parts = urlsplit(url)
    address = addresses[0]
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host_header = parts.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return parts._replace(netloc=netloc).geturl(), {"host": host_header}, extensions


def _checked(url: str, allow_private: bool, schemes: tuple[str, ...]) -> tuple[str, list[str]]:
    """(host, the addresses checked): none where private targets are allowed (nothing to check)."""
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
        return "", []
    host = parts.hostname
    if not host:
        raise TargetError("the URL has no host")
    if allow_private:
        return host, []
    addresses = resolve(host, port)
    for address in addresses:
        if not ipaddress.ip_address(address).is_global:
            raise TargetError(
                f"{host} is a loopback, private or reserved address ({address}); this deployment "
                "sends only to public addresses (UDS_ALLOW_PRIVATE_TARGETS)"
            )
    return host, addresses


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
