"""Checks on where the server listens and where exports may write."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

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


def from_other_site(
    *, origin: str | None, host: str | None, client_host: str | None, trusted_origins: Sequence[str]
) -> bool:
    """Whether a request may come from a web page of another site, opened in a browser on this machine.

    Such a page can send requests to a loopback server (a form, `fetch` with `no-cors`, a
    WebSocket: it gives an `Origin` of its own, or `null`) and, through DNS rebinding, read the
    answers (its requests name its own domain in `Host`). Neither may borrow the trust auth-off
    gives to callers on this machine. An `Origin` listed in `trusted_origins` (CORS) or naming
    a loopback host is not foreign. `Host` is foreign when it names a domain (a dotted name,
    not an IP address): rebinding needs a name the attacker's DNS answers for, which `localhost`,
    IP addresses and single-label names (`/etc/hosts`) are not. It is only looked at for TCP
    clients (an in-process or Unix-socket client is no browser).
    """
    if origin is not None and origin not in trusted_origins and not is_loopback(_hostname(origin)):
        return True
    if not host or not _is_ip(client_host):
        return False
    name = _hostname(f"//{host}")
    return name is None or ("." in name and not _is_ip(name))


_RELAY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def relayed(headers: Mapping[str, str]) -> bool:
    """Whether a proxy relayed the request for someone else: it says so in `Forwarded`,
    `X-Forwarded-For` or `X-Real-IP`. Its own address (loopback, for a proxy on this machine)
    is then not the caller's, and earns no auth-off trust."""
    return any(name in headers for name in _RELAY_HEADERS)


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _is_ip(host: str | None) -> bool:
    try:
        ipaddress.ip_address((host or "").strip("[]"))
    except ValueError:
        return False
    return True


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
    `.` and `..` segments, control characters and fsspec's `::` chaining (`simplecache::file:/etc`
    reads as a relative path named `simplecache::file:` but writes to `/etc`). One trailing `/`
    is fine.

    Raises:
        ValidationError: naming `field`.
    """
    if any(ord(ch) < 32 for ch in url) or len(url) > 2048:
        raise ValidationError(field, "contains control characters or is too long")
    if "?" in url or "#" in url:
        raise ValidationError(field, "must not contain a query string or fragment ('?', '#')")
    if "::" in url:
        raise ValidationError(field, "must be one location, not an fsspec chain ('::')")
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

    Local paths (and `file://` URLs) are compared as fsspec resolves them for the export's
    writes (`~` expanded, a `file:` prefix stripped: read as plain relative paths, `~/x` and
    `file:/etc/x` passed whenever the working directory lay inside a root), then with symlinks
    resolved; URLs (`s3://bucket/prefix/`) by scheme, bucket and path prefix, exactly as written
    (see `check_destination_form`).

    Raises:
        ValidationError: naming `field`.
    """
    check_destination_form(url, field)
    scheme, path = _scheme_and_path(url)
    if scheme == "file":
        real = _local_directory(url)
        if real is None:
            raise ValidationError(field, "must be a local directory or a URL under one of auth.export_roots")
        for root in [export_dir, *roots]:
            root_real = _local_directory(root) if _scheme_and_path(root)[0] == "file" else None
            if root_real is not None and (real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)):
                return
        raise ValidationError(field, "must be inside the export dir or one of auth.export_roots")
    target = f"{scheme}://{path}".rstrip("/")
    for root in roots:
        root_scheme, root_path = _scheme_and_path(root)
        prefix = f"{root_scheme}://{re.sub(r'/+', '/', root_path)}".rstrip("/")
        if root_scheme == scheme and (target == prefix or target.startswith(prefix + "/")):
            return
    raise ValidationError(field, f"{scheme}:// destinations must be under one of auth.export_roots")


def _local_directory(url: str) -> str | None:
    """The real path of the local directory fsspec writes for `url` (the call exports make), or
    None when fsspec would write elsewhere than the local file system."""
    try:
        filesystem, path = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError):
        return None
    return os.path.realpath(path) if isinstance(filesystem, LocalFileSystem) else None


def _scheme_and_path(url: str) -> tuple[str, str]:
    """`("s3", "bucket/prefix")` for `s3://bucket/prefix`; `("file", path)` for a local path."""
    match = _SCHEME.match(url)
    return (match.group(1).lower(), url[match.end() :]) if match else ("file", url)
