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


def check_destination(url: str, *, export_dir: str, roots: Sequence[str], field: str = "destination") -> None:
    """An export destination must lie inside the export dir or one of `roots`.

    Local paths (and `file://` URLs) are compared after resolving symlinks; URLs
    (`s3://bucket/prefix/`) by scheme, bucket and path prefix. `..` segments are refused
    outright, as are control characters.

    Raises:
        ValidationError: naming `field`.
    """
    if any(ord(ch) < 32 for ch in url) or len(url) > 2048:
        raise ValidationError(field, "contains control characters or is too long")
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else "file"
    rest = url[match.end() :] if match else url
    path = rest.split("?", 1)[0].split("#", 1)[0]
    if ".." in re.split(r"[/\\]", path):
        raise ValidationError(field, "must not contain '..'")
    if scheme == "file":
        if not path:
            raise ValidationError(field, "is empty")
        real = os.path.realpath(path)
        for root in [export_dir, *roots]:
            root_match = _SCHEME.match(root)
            if root_match and root_match.group(1).lower() != "file":
                continue
            root_path = os.path.realpath(root[root_match.end() :] if root_match else root)
            if real == root_path or real.startswith(root_path.rstrip(os.sep) + os.sep):
                return
        raise ValidationError(field, "must be inside the export dir or one of auth.export_roots")
    target = f"{scheme}://{re.sub(r'/+', '/', path)}".rstrip("/")
    for root in roots:
        root_match = _SCHEME.match(root)
        if not root_match or root_match.group(1).lower() != scheme:
            continue
        prefix = f"{scheme}://{re.sub(r'/+', '/', root[root_match.end() :])}".rstrip("/")
        if target == prefix or target.startswith(prefix + "/"):
            return
    raise ValidationError(field, f"{scheme}:// destinations must be under one of auth.export_roots")
