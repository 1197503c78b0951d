"""One view over a transaction's message in either RPC encoding.

`json` gives account keys as strings and instructions as indices into them, with v0 lookup-table
keys in `meta.loadedAddresses`; `jsonParsed` gives key objects (lookup-table keys included) and
instructions with pubkeys, some of them already parsed (binary encodings arrive here already parsed
into the `json` shape by `_wire`). The rest of the decoder reads both through
`MessageView` so that it never branches on the encoding itself.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from arbitrage.errors import ValidationError


class TokenAccount(NamedTuple):
    """A token account touched by the transaction, from `meta.pre/postTokenBalances`."""

    mint: str
    owner: str
    decimals: int
    pre: int
    post: int


def require(obj: Any, key: str, path: str) -> Any:
    """`obj[key]`, or a ValidationError naming `path` when it is missing or null."""
    if not isinstance(obj, dict):
        raise ValidationError(path.rsplit(".", 1)[0] or path, "expected an object")
    value = obj.get(key)
    if value is None:
        raise ValidationError(path, "missing")
    return value


def _loaded(loaded: dict[str, Any], lookups: list[dict[str, Any]], side: str) -> list[str]:
    """`meta.loadedAddresses[side]`, one address per lookup index of that side.

    Instructions index the looked-up keys by position: one address short or over would shift
    every later one onto the wrong account, silently.
    """
    addresses: list[str] = loaded.get(side) or []
    wanted = sum(len(table[f"{side}Indexes"]) for table in lookups)
    if len(addresses) != wanted:
        raise ValidationError(
            f"meta.loadedAddresses.{side}",
            f"{len(addresses)} addresses for the {wanted} {side} indexes of the lookup tables",
        )
    return addresses


class MessageView:
    """Account keys, signers and instructions of one transaction, encoding-independent."""

    __slots__ = ("inner", "keys", "outer", "parsed", "signers")

    def __init__(self, transaction: dict[str, Any], meta: dict[str, Any]) -> None:
        message = require(transaction, "message", "transaction.message")
        raw_keys = require(message, "accountKeys", "transaction.message.accountKeys")
        if not isinstance(raw_keys, list) or not raw_keys:
            raise ValidationError("transaction.message.accountKeys", "expected a non-empty list")
        self.parsed = isinstance(raw_keys[0], dict)
        if self.parsed:
            self.keys: list[str] = [k["pubkey"] for k in raw_keys]
            self.signers = frozenset(k["pubkey"] for k in raw_keys if k.get("signer"))
        else:
            keys = list(raw_keys)
            loaded = meta.get("loadedAddresses")
            lookups = message.get("addressTableLookups")
            if lookups:
                if not loaded:
                    raise ValidationError("meta.loadedAddresses", "missing for a message with lookup tables")
                keys += _loaded(loaded, lookups, "writable")
                keys += _loaded(loaded, lookups, "readonly")
            elif loaded:
                keys += loaded.get("writable", ())
                keys += loaded.get("readonly", ())
            self.keys = keys
            header = require(message, "header", "transaction.message.header")
            self.signers = frozenset(keys[: header.get("numRequiredSignatures", 1)])
        self.outer: list[dict[str, Any]] = require(message, "instructions", "transaction.message.instructions")
        self.inner: dict[int, list[dict[str, Any]]] = {
            group["index"]: group["instructions"] for group in meta.get("innerInstructions") or ()
        }

    def program(self, ix: dict[str, Any]) -> str:
        """Program id of an instruction."""
        program: str = ix["programId"] if self.parsed else self.keys[ix["programIdIndex"]]
        return program

    def accounts(self, ix: dict[str, Any]) -> list[str]:
        """Account pubkeys of an (unparsed) instruction, in order."""
        if self.parsed:
            return ix.get("accounts") or []
        keys = self.keys
        return [keys[i] for i in ix["accounts"]]

    def account(self, ix: dict[str, Any], position: int) -> str | None:
        """One account of an instruction, or None when the instruction has fewer accounts."""
        accounts = ix.get("accounts") or ()
        if position >= len(accounts):
            return None
        account: str = accounts[position] if self.parsed else self.keys[accounts[position]]
        return account


def token_accounts(keys: list[str], meta: dict[str, Any]) -> dict[str, TokenAccount]:
    """Token accounts by pubkey; an account created or closed in the transaction counts 0 on the missing side."""
    pre: dict[int, dict[str, Any]] = {b["accountIndex"]: b for b in meta.get("preTokenBalances") or ()}
    post: dict[int, dict[str, Any]] = {b["accountIndex"]: b for b in meta.get("postTokenBalances") or ()}
    result: dict[str, TokenAccount] = {}
    for index in pre.keys() | post.keys():
        before = pre.get(index)
        after = post.get(index)
        entry = after or before
        assert entry is not None  # the index came from one of the two maps
        amount = entry["uiTokenAmount"]
        result[keys[index]] = TokenAccount(
            mint=entry["mint"],
            owner=entry.get("owner") or "",
            decimals=int(amount["decimals"]),
            pre=int(before["uiTokenAmount"]["amount"]) if before else 0,
            post=int(after["uiTokenAmount"]["amount"]) if after else 0,
        )
    return result
