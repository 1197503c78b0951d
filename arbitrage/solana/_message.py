"""One view over a transaction's message in either RPC encoding.

`json` gives account keys as strings and instructions as indices into them, with v0 lookup-table
keys in `meta.loadedAddresses`; `jsonParsed` gives key objects (lookup-table keys included) and
instructions with pubkeys, some of them already parsed (binary encodings arrive here already parsed
into the `json` shape by `_wire`). The rest of the decoder reads both through
`MessageView` so that it never branches on the encoding itself.

Every index the decoder follows is checked before it is used (instruction indexes and inner-instruction
groups when the view is built, token balances' `accountIndex` in `token_accounts`): Python reads a
negative index from the end of a list and `true` as 1, so a corrupt one would otherwise pick the
wrong account silently, and one past the end would fail without naming its field.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from arbitrage.errors import ValidationError

_INSTRUCTIONS = "transaction.message.instructions"
_HEADER = "transaction.message.header"
_HEADER_FIELDS = ("numRequiredSignatures", "numReadonlySignedAccounts", "numReadonlyUnsignedAccounts")


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


def check_index(index: Any, count: int, path: str, of: str) -> int:
    """`index` when it points at one of `count` items (`of` names them), else a ValidationError naming `path`."""
    if type(index) is not int:  # a bool is an int to Python, not to JSON
        raise ValidationError(path, f"expected an integer index, got {type(index).__name__}")
    if index < 0:
        raise ValidationError(path, f"index {index} is negative")
    if index >= count:
        raise ValidationError(path, f"index {index} is past the {count} {of}")
    return index


def check_header(signatures: int, header: tuple[Any, Any, Any], keys: int) -> None:
    """The message header's rules that Solana's sanitize applies before a transaction can land.

    Signers are the first `numRequiredSignatures` keys: a count that disagrees with the signatures
    or the keys would name the wrong signers. `header` holds the three counts in `_HEADER_FIELDS` order.
    """
    required, readonly_signed, readonly_unsigned = header
    if (
        type(required) is type(readonly_signed) is type(readonly_unsigned) is int
        and 0 <= readonly_signed < required == signatures
        and 0 <= readonly_unsigned <= keys - required
    ):
        return
    for name, value in zip(_HEADER_FIELDS, header, strict=True):
        if type(value) is not int or value < 0:
            raise ValidationError(f"{_HEADER}.{name}", f"expected a count, got {value!r}")
    if not signatures:
        raise ValidationError("transaction.signatures", "none; a transaction is signed by at least its fee payer")
    if required != signatures:
        reason = f"{signatures} signatures for {required} required signers"
    elif readonly_signed >= required:
        reason = f"{readonly_signed} of {required} signers read-only: the fee payer would be read-only"
    else:
        reason = (
            f"{required} signers and {readonly_unsigned} read-only unsigned accounts: "
            f"more signed and read-only accounts than the {keys} keys"
        )
    raise ValidationError(_HEADER, reason)


def check_instructions(instructions: Any, path: str, own: int, total: int, *, outer: bool) -> None:
    """Refuse `instructions` unless every program and account index points at one of the `total` keys.

    `own` of them are the message's, the rest come from lookup tables. An outer instruction may not
    run the fee payer (index 0) as its program, as Solana's sanitize has it. A plain loop: for the
    few indexes of an instruction it is cheaper than min/max/type sets; the path of a bad index is
    only built when there is one.

    Raises:
        ValidationError: naming the first bad index as its path, e.g. `...instructions[2].accounts[1]`.
    """
    if type(instructions) is not list:
        raise ValidationError(path, f"expected a list, got {type(instructions).__name__}")
    lowest = 1 if outer else 0
    for number, ix in enumerate(instructions):
        if type(ix) is dict:
            program = ix.get("programIdIndex")
            accounts = ix.get("accounts")
            if type(program) is int and lowest <= program < total and type(accounts) is list:
                for index in accounts:
                    if type(index) is not int or not 0 <= index < total:
                        break
                else:
                    continue  # every index fits
        _instruction_fault(ix, f"{path}[{number}]", own, total, lowest)


def _instruction_fault(ix: Any, path: str, own: int, total: int, lowest: int) -> None:
    """Raise the error naming the first bad index of an instruction that failed the fast check."""
    of = f"keys ({own} own, {total - own} from lookup tables)"
    program = require(ix, "programIdIndex", f"{path}.programIdIndex")
    if check_index(program, total, f"{path}.programIdIndex", of) < lowest:
        raise ValidationError(f"{path}.programIdIndex", "index 0 is the fee payer")
    accounts = require(ix, "accounts", f"{path}.accounts")
    if type(accounts) is not list:
        raise ValidationError(f"{path}.accounts", f"expected a list of indexes, got {type(accounts).__name__}")
    for position, index in enumerate(accounts):
        check_index(index, total, f"{path}.accounts[{position}]", of)


def _objects(instructions: Any, path: str) -> None:
    """Refuse `jsonParsed` instructions that are not a list of objects; they name pubkeys, not indexes."""
    if type(instructions) is not list or not all(type(ix) is dict for ix in instructions):
        raise ValidationError(path, "expected a list of objects")


def _addresses(loaded: dict[str, Any], side: str) -> list[str]:
    """`meta.loadedAddresses[side]`, which must be a list: a string would become one key per character."""
    addresses = loaded.get(side) or []
    if type(addresses) is not list:
        raise ValidationError(f"meta.loadedAddresses.{side}", f"expected a list, got {type(addresses).__name__}")
    return addresses


def _loaded(loaded: dict[str, Any], lookups: list[dict[str, Any]], side: str) -> list[str]:
    """`meta.loadedAddresses[side]`, one address per lookup index of that side.

    Instructions index the looked-up keys by position: one address short or over would shift
    every later one onto the wrong account, silently.
    """
    addresses = _addresses(loaded, side)
    wanted = 0
    for number, table in enumerate(lookups):
        indexes = require(table, f"{side}Indexes", f"transaction.message.addressTableLookups[{number}].{side}Indexes")
        if type(indexes) is not list:
            raise ValidationError(
                f"transaction.message.addressTableLookups[{number}].{side}Indexes",
                f"expected a list, got {type(indexes).__name__}",
            )
        wanted += len(indexes)
    if len(addresses) != wanted:
        raise ValidationError(
            f"meta.loadedAddresses.{side}",
            f"{len(addresses)} addresses for the {wanted} {side} indexes of the lookup tables",
        )
    return addresses


def _inner(meta: dict[str, Any], outer: int, own: int, keys: int | None) -> dict[int, list[dict[str, Any]]]:
    """`meta.innerInstructions` by the outer instruction that made them.

    A group pointing past the outer instructions, or a second group for the same one, would drop
    swaps from the route silently. `keys` is the key count to check indexes against, None for
    `jsonParsed` (its inner instructions name pubkeys).
    """
    groups = meta.get("innerInstructions") or []
    if type(groups) is not list:
        raise ValidationError("meta.innerInstructions", f"expected a list, got {type(groups).__name__}")
    inner: dict[int, list[dict[str, Any]]] = {}
    for number, group in enumerate(groups):
        if type(group) is not dict:
            raise ValidationError(f"meta.innerInstructions[{number}]", "expected an object")
        index: Any = group.get("index")
        instructions: Any = group.get("instructions")
        if type(index) is not int or not 0 <= index < outer or index in inner or type(instructions) is not list:
            _group_fault(group, f"meta.innerInstructions[{number}]", outer, inner)
        if keys is None:
            _objects(instructions, f"meta.innerInstructions[{number}].instructions")
        else:
            check_instructions(instructions, f"meta.innerInstructions[{number}].instructions", own, keys, outer=False)
        inner[index] = instructions
    return inner


def _group_fault(group: Any, path: str, outer: int, seen: dict[int, Any]) -> None:
    """Raise the error naming what is wrong with an inner-instruction group that failed the fast check."""
    index = check_index(require(group, "index", f"{path}.index"), outer, f"{path}.index", "outer instructions")
    if index in seen:
        raise ValidationError(f"{path}.index", f"a second group for outer instruction {index}")
    instructions = require(group, "instructions", f"{path}.instructions")
    raise ValidationError(f"{path}.instructions", f"expected a list, got {type(instructions).__name__}")


class MessageView:
    """Account keys, signers and instructions of one transaction, encoding-independent.

    Raises ValidationError on construction when an index the decoder follows is malformed; with
    `sanitized` (a binary transaction, whose wire parser checked the header and instruction
    indexes already) only `meta`'s are checked.
    """

    __slots__ = ("inner", "keys", "outer", "parsed", "signers")

    def __init__(self, transaction: dict[str, Any], meta: dict[str, Any], *, sanitized: bool = False) -> None:
        message = require(transaction, "message", "transaction.message")
        raw_keys = require(message, "accountKeys", "transaction.message.accountKeys")
        if not isinstance(raw_keys, list) or not raw_keys:
            raise ValidationError("transaction.message.accountKeys", "expected a non-empty list")
        self.parsed = isinstance(raw_keys[0], dict)
        self.outer: list[dict[str, Any]] = require(message, "instructions", _INSTRUCTIONS)
        own = len(raw_keys)
        if self.parsed:
            self.keys: list[str] = [k["pubkey"] for k in raw_keys]
            self.signers = frozenset(k["pubkey"] for k in raw_keys if k.get("signer"))
            _objects(self.outer, _INSTRUCTIONS)
            self.inner = _inner(meta, len(self.outer), own, None)
            return
        keys = list(raw_keys)
        loaded = meta.get("loadedAddresses")
        lookups = message.get("addressTableLookups")
        if lookups:
            if not loaded:
                raise ValidationError("meta.loadedAddresses", "missing for a message with lookup tables")
            keys += _loaded(loaded, lookups, "writable")
            keys += _loaded(loaded, lookups, "readonly")
        elif loaded:
            keys += _addresses(loaded, "writable")
            keys += _addresses(loaded, "readonly")
        self.keys = keys
        header = require(message, "header", _HEADER)
        if type(header) is not dict:
            raise ValidationError(_HEADER, "expected an object")
        counts = (
            header.get("numRequiredSignatures"),
            header.get("numReadonlySignedAccounts"),
            header.get("numReadonlyUnsignedAccounts"),
        )
        if not sanitized:
            check_header(len(transaction["signatures"]), counts, own)
            check_instructions(self.outer, _INSTRUCTIONS, own, len(keys), outer=True)
        self.signers = frozenset(keys[: counts[0]])
        self.inner = _inner(meta, len(self.outer), own, len(keys))

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
    pre = _balances_by_index(meta, "preTokenBalances", len(keys))
    post = _balances_by_index(meta, "postTokenBalances", len(keys))
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


def _balances_by_index(meta: dict[str, Any], side: str, keys: int) -> dict[int, dict[str, Any]]:
    """`meta[side]` by `accountIndex`; a second balance for one account would hide the first."""
    balances = meta.get(side) or []
    if type(balances) is not list:
        raise ValidationError(f"meta.{side}", f"expected a list, got {type(balances).__name__}")
    by_index: dict[int, dict[str, Any]] = {}
    for number, balance in enumerate(balances):
        if type(balance) is not dict:
            raise ValidationError(f"meta.{side}[{number}]", "expected an object")
        index: Any = balance.get("accountIndex")
        if type(index) is not int or not 0 <= index < keys or index in by_index:
            path = f"meta.{side}[{number}].accountIndex"
            if check_index(require(balance, "accountIndex", path), keys, path, "account keys") in by_index:
                raise ValidationError(path, f"a second balance for account {index}")
        by_index[index] = balance
    return by_index
