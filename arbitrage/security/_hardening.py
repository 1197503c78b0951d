"""Checks on where the server listens and where exports may write."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence

from arbitrage.errors import ConfigError, ValidationError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def is_loopback(host: str | None) -> bool:
    """Whether an address (or `localhost`) is loopback; IPv4-mapped IPv6 counts."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_local_client(host: str | None) -> bool:
    """A client on this machine: a loopback IP, or no IP at all (Unix socket, in-process test)."""
    if not host:
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True
    return is_loopback(host)


def client_network(host: str | None) -> str:
    """The rate-limit key of an address: the IPv6 /64 it lies in (a single host or customer
    usually holds a whole /64, so per-address buckets would let it rotate addresses for
    fresh budgets), an IPv4 (or IPv4-mapped) address as is, anything else as written."""
    try:
        address = ipaddress.ip_address((host or "").strip("[]"))
    except ValueError:
        return str(host)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def check_bind(host: str, auth_enabled: bool) -> None:
    """Refuse to listen beyond loopback without auth.

    Raises:
        ConfigError: `host` is not loopback and auth is off.
    """
    if auth_enabled or is_loopback(host):
        return
    raise ConfigError(
        f"server.host is {host!r}, which is reachable from other machines, and auth is off. "
        "Refusing to start: set auth.enabled = true (ARB_AUTH__ENABLED=true) and give clients API keys "
        "or JWTs, or bind to 127.0.0.1."
    )


def check_destination_form(url: str, field: str = "destination") -> None:
    """A destination must be written in one canonical form, so that the URL checked is the URL written.

    fsspec takes `?`, `#` and empty segments literally (`s3://b/arb?x=1` writes the key
    `arb?x=1/…`, `s3://b//arb` the key `/arb`) and knows no `S3://`; a check that normalised
    them would approve a place other than the one written to. So they are refused, as are
    `.` and `..` segments and control characters. One trailing `/` is fine.

    Raises:
        ValidationError: naming `field`.
    """
    if any(ord(ch) < 32 for ch in url) or len(url) > 2048:
        raise ValidationError(field, "contains control characters or is too long")
    if "?" in url or "#" in url:
        raise ValidationError(field, "must not contain a query string or fragment ('?', '#')")
    match = _SCHEME.match(url)
    if match and match.group(1) != match.group(1).lower():
        raise ValidationError(field, f"scheme must be lowercase ({match.group(1).lower()}://)")
    scheme, path = _scheme_and_path(url.rstrip("/"))
    segments = re.split(r"[/\\]", path)
    if ".." in segments or "." in segments:
        raise ValidationError(field, "must not contain '.' or '..' segments")
    if scheme == "file" and path.startswith("/"):
        segments = segments[1:]  # an absolute path's leading `/`
    if "" in segments:
        raise ValidationError(field, "must not be empty or contain empty path segments ('//')")


def check_destination(url: str, *, export_dir: str, roots: Sequence[str], field: str = "destination") -> None:
    """An export destination must be in canonical form and inside the export dir or one of `roots`.

    Local paths (and `file://` URLs) are compared after resolving symlinks; URLs
    (`s3://bucket/prefix/`) by scheme, bucket and path prefix, exactly as written (see
    `check_destination_form`).

    Raises:
        ValidationError: naming `field`.
    """
    check_destination_form(url, field)
    scheme, path = _scheme_and_path(url)
    if scheme == "file":
        real = os.path.realpath(path)
        for root in [export_dir, *roots]:
            root_scheme, root_path = _scheme_and_path(root)
            if root_scheme != "file":
                continue
            root_real = os.path.realpath(root_path)
            if real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep):
                return
        raise ValidationError(field, "must be inside the export dir or one of auth.export_roots")
    target = f"{scheme}://{path}".rstrip("/")
    for root in roots:
        root_scheme, root_path = _scheme_and_path(root)
        prefix = f"{root_scheme}://{re.sub(r'/+', '/', root_path)}".rstrip("/")
        if root_scheme == scheme and (target == prefix or target.startswith(prefix + "/")):
            return
    raise ValidationError(field, f"{scheme}:// destinations must be under one of auth.export_roots")


def _scheme_and_path(url: str) -> tuple[str, str]:
    """`("s3", "bucket/prefix")` for `s3://bucket/prefix`; `("file", path)` for a local path."""
    match = _SCHEME.match(url)
    return (match.group(1).lower(), url[match.end() :]) if match else ("file", url)
