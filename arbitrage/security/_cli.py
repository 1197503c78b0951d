"""`arbitrage keys create|list|revoke`: manage API keys in the warehouse, or through a
running server's admin API with `--url` (the embedded warehouse has one owner at a time)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec

from arbitrage.config import Settings
from arbitrage.errors import ArbitrageError, ValidationError, WarehouseLocked
from arbitrage.security._access import admin_token_path
from arbitrage.security._hardening import is_loopback
from arbitrage.security._keys import ROLES, KeyStore, check_new_key


def add_keys_arguments(keys: argparse.ArgumentParser) -> None:
    """The arguments and subcommands of the CLI's `keys` command."""
    # Where the keys live, given before or after the subcommand (the later one wins).
    where = argparse.ArgumentParser(add_help=False)
    for parser, default in ((keys, None), (where, argparse.SUPPRESS)):
        parser.add_argument("--data-dir", default=default, help="storage.data_dir")
        parser.add_argument(
            "--url",
            default=default,
            type=_admin_url,
            help="manage keys through a running server's admin API, e.g. http://127.0.0.1:8080",
        )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser(
        "create", parents=[where], help="create a key and print its token (shown only this once)"
    )
    create.add_argument("--name", default="", type=_key_name, help="a label for people")
    create.add_argument(
        "--role", dest="roles", action="append", choices=ROLES, help="role to grant (repeatable; default read)"
    )
    create.add_argument(
        "--expires-in-days", type=_expiry, help="the key stops working after this many days (at most 3650)"
    )
    create.set_defaults(handler=run_keys_command)
    listing = keys_sub.add_parser("list", parents=[where], help="list keys (never their tokens)")
    listing.set_defaults(handler=run_keys_command)
    revoke = keys_sub.add_parser("revoke", parents=[where], help="revoke a key by id")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=run_keys_command)


def _admin_url(text: str) -> str:
    """An argparse `type=`: a bad `--url` is a bad argument (exit 2), refused before anything runs."""
    try:
        _check_admin_url(text.rstrip("/"))
    except ArbitrageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--url {text.rstrip('/')!r}: ")) from None
    return text


def _key_name(text: str) -> str:
    """An argparse `type=` with the rules of `check_new_key`: exit 2 before the warehouse is opened."""
    try:
        check_new_key(text, ["read"], None)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
    return text


def _expiry(text: str) -> float:
    """An argparse `type=` for `--expires-in-days`, with the rules of `check_new_key`."""
    try:
        days = float(text)
        check_new_key("", ["read"], days)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"{exc.reason}, got {text}") from None
    return days


def run_keys_command(args: argparse.Namespace, settings: Settings) -> int:
    result = _over_http(args, settings) if args.url else asyncio.run(_in_warehouse(args, settings))
    print(json.dumps(result, indent=2, default=str))
    if args.keys_command == "create":
        print("The token is shown only this once: store it now.", file=sys.stderr)
    return 0


async def _in_warehouse(args: argparse.Namespace, settings: Settings) -> Any:
    from arbitrage.storage import open_warehouse

    warehouse = open_warehouse(settings.storage)
    try:
        await warehouse.start()
    except WarehouseLocked as exc:
        raise ArbitrageError(f"{exc}; while the server runs, use `arbitrage keys --url http://HOST:PORT …`") from exc
    try:
        store = KeyStore(warehouse)
        if args.keys_command == "create":
            roles = args.roles or ["read"]
            check_new_key(args.name, roles, args.expires_in_days)
            created = await store.create(args.name, roles, args.expires_in_days)
            return msgspec.to_builtins(created)
        if args.keys_command == "list":
            return msgspec.to_builtins(await store.list())
        return msgspec.to_builtins(await store.revoke(args.key_id))
    finally:
        await warehouse.close()


def _check_admin_url(url: str) -> None:
    """Refuse to send the admin credential where others may read it: plain HTTP goes only to a
    loopback address (a host name may resolve anywhere); anything else needs `https://`.

    Raises:
        ArbitrageError: naming the URL's problem, before any connection is made.
    """
    try:
        scheme, host = urlsplit(url).scheme, urlsplit(url).hostname
    except ValueError:
        scheme, host = "", None
    if (scheme == "https" and host) or (scheme == "http" and is_loopback(host)):
        return
    raise ArbitrageError(
        f"--url {url!r}: the admin credential goes only over https://, or http:// to a loopback address "
        "(127.0.0.1, [::1]); plain HTTP to another host would show it to anyone on the way"
    )


def _over_http(args: argparse.Namespace, settings: Settings) -> Any:
    import httpx

    base = args.url.rstrip("/")
    _check_admin_url(base)
    token = settings.auth.admin_token
    if not token:
        path = admin_token_path(settings)
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ArbitrageError(f"cannot read the admin credential from {path}: {exc.strerror}") from exc
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=30, headers=headers) as client:
        if args.keys_command == "create":
            body = {"name": args.name, "roles": args.roles or ["read"], "expires_in_days": args.expires_in_days}
            response = client.post(f"{base}/admin/keys", json=body)
        elif args.keys_command == "list":
            response = client.get(f"{base}/admin/keys")
        else:
            response = client.delete(f"{base}/admin/keys/{quote(args.key_id, safe='')}")
    if response.status_code >= 400:
        raise ArbitrageError(f"{base} answered {response.status_code}: {response.text[:300]}")
    return response.json()
