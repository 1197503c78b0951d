"""Apply `migrations/NNN_name.sql` in order, each once, recorded in `schema_migrations`.

Files are plain ClickHouse SQL with a few placeholders, so the same files serve the
embedded engine, a single server and a cluster:
`${db}` the database, `${on_cluster}` (empty or `ON CLUSTER name`),
`${replacing_merge_tree}`, `${merge_tree}`, `${summing_merge_tree}` (replicated on a cluster),
`${bundled_engine_settings}` (table settings, after a comma, that only the bundled chdb engine
gets: ones a server may not know, or that only matter when merges run on the ingest box;
empty on a server).
Statements are separated by a `;` at the end of a line.

On a cluster (`cluster` given) the rendering also lays out the scale-out topology: each
`CREATE TABLE ${db}.name` becomes a replicated local table `name_local` on every node plus a
`Distributed` table `name` in front of it (sharded by `SHARDING_KEYS`, else by a hash of the
table's sorting key, so every copy of a row lands on one shard and per-shard de-duplication
holds); materialized views read and write the local tables; column changes apply to both.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from arbitrage.errors import MigrationError

_FILE_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    path: Path
    checksum: str


def migrations_dir() -> Path:
    """The migrations shipped with the package (installed) or beside it (source tree)."""
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def discover(directory: Path) -> list[Migration]:
    """Migrations in version order; a malformed name or a repeated number is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        found[version] = Migration(version, match.group(2), path, checksum)
    return [found[v] for v in sorted(found)]


LOCAL_SUFFIX = "_local"
"""On a cluster, `name` is the Distributed front and `name_local` holds the shard's rows."""
REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
"""Keeper path of a replicated local table (server macros, expanded by ClickHouse per node)."""
REPLICA_NAME = "{replica}"
SHARDING_KEYS = {"transactions": "cityHash64(signature)"}
"""Sharding keys that differ from the default hash of the table's sorting key."""

_REPLICATED_ENGINE = re.compile(r"\b(Replicated\w*MergeTree)(?:\(([^)]*)\))?")
_CREATE_TABLE = re.compile(r"^CREATE TABLE (IF NOT EXISTS )?(\w+)\.(\w+)\b", re.IGNORECASE)
_CREATE_VIEW = re.compile(r"^CREATE MATERIALIZED VIEW (?:IF NOT EXISTS )?(\w+)\.(\w+)\b", re.IGNORECASE)
_ALTER_TABLE = re.compile(r"^ALTER TABLE (\w+)\.(\w+)\b", re.IGNORECASE)
_ADD_COLUMN = re.compile(r"^(ALTER TABLE \w+\.\w+(?: ON CLUSTER \w+)?)\s+(ADD COLUMN\b.*)$", re.IGNORECASE | re.DOTALL)
_DROP_TABLE = re.compile(r"^DROP TABLE (IF EXISTS )?(\w+)\.(\w+)\b", re.IGNORECASE)
_TRUNCATE_TABLE = re.compile(r"^TRUNCATE TABLE (IF EXISTS )?(\w+)\.(\w+)\b", re.IGNORECASE)
_COLUMN_CHANGE = re.compile(r"\b(ADD|DROP|MODIFY|RENAME|COMMENT|CLEAR) COLUMN\b", re.IGNORECASE)
_ORDER_BY = re.compile(r"\bORDER BY\s+(\([^()]*\)|[\w.]+)", re.IGNORECASE)


BUNDLED_ENGINE_SETTINGS = ", min_level_for_wide_part = 1, merge_selector_base = 40"
"""Table settings of `transactions` on the embedded engine only.

- `min_level_for_wide_part = 1`: inserts stay compact whatever their size (a 45k-row insert
  written wide cost 560 ms instead of 420). Servers before ClickHouse 25.10 do not know it.
- `merge_selector_base = 40` (10 from migration 008, 40 from 017; ClickHouse's default is 5):
  merges wait for more parts of a size, so each row is rewritten fewer times (an LSM's tiering
  trade) for more parts per partition. Older servers do not know it, and there merges cost
  the server's CPU, not the ingest box's.
"""


def render(sql: str, *, database: str, cluster: str, bundled_engine: bool = False) -> list[str]:
    """Substitute the placeholders and split into statements (cluster layout when `cluster`)."""
    on_cluster = f"ON CLUSTER {cluster}" if cluster else ""
    replicated = "Replicated" if cluster else ""
    values = {
        "db": database,
        "on_cluster": on_cluster,
        "replacing_merge_tree": f"{replicated}ReplacingMergeTree",
        "merge_tree": f"{replicated}MergeTree",
        "summing_merge_tree": f"{replicated}SummingMergeTree",
        "bundled_engine_settings": BUNDLED_ENGINE_SETTINGS if bundled_engine else "",
    }
    text = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], sql)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    statements = _merge_column_additions(
        [stmt.strip() for stmt in re.split(r";\s*$", text, flags=re.MULTILINE) if stmt.strip()]
    )
    if not cluster:
        return statements
    return [out for stmt in statements for out in _cluster_layout(stmt, database, cluster)]


def _merge_column_additions(statements: list[str]) -> list[str]:
    """Consecutive `ADD COLUMN`s on one table as one ALTER.

    Each ALTER commits the table's metadata once: 25-35 ms each on the embedded engine, where
    a fresh data dir's 80-odd column additions were most of a first start; on a cluster each
    is a round of the DDL queue.
    """
    merged: list[str] = []
    adding_to = None  # the "ALTER TABLE …" that the last statement added columns with
    for statement in statements:
        addition = _ADD_COLUMN.match(statement)
        table = addition.group(1) if addition else None
        if addition and table == adding_to:
            merged[-1] += f",\n    {addition.group(2)}"
        else:
            merged.append(statement)
        adding_to = table
    return merged


def _cluster_layout(statement: str, database: str, cluster: str) -> list[str]:
    """One rendered statement as the cluster runs it: local replicated tables, Distributed fronts."""
    if create := _CREATE_TABLE.match(statement):
        if_not_exists, db, name = create.group(1) or "", create.group(2), create.group(3)
        local = _CREATE_TABLE.sub(f"CREATE TABLE {if_not_exists}{db}.{name}{LOCAL_SUFFIX}", statement, count=1)
        local = _REPLICATED_ENGINE.sub(_with_replica_path, local)
        front = (
            f"CREATE TABLE {if_not_exists}{db}.{name} ON CLUSTER {cluster} AS {db}.{name}{LOCAL_SUFFIX} "
            f"ENGINE = Distributed({cluster}, {db}, {name}{LOCAL_SUFFIX}, {sharding_key(name, statement)})"
        )
        return [local, front]
    if view := _CREATE_VIEW.match(statement):
        db, view_name = view.group(1), view.group(2)
        body = re.sub(
            rf"\b{re.escape(db)}\.(\w+)\b",
            lambda m: m.group(0) if m.group(1) == view_name else f"{db}.{m.group(1)}{LOCAL_SUFFIX}",
            statement,
        )
        return [body]
    if alter := _ALTER_TABLE.match(statement):
        db, name = alter.group(1), alter.group(2)
        local = _ALTER_TABLE.sub(f"ALTER TABLE {db}.{name}{LOCAL_SUFFIX}", statement, count=1)
        return [local, statement] if _COLUMN_CHANGE.search(statement) else [local]
    if truncate := _TRUNCATE_TABLE.match(statement):  # the rows are in the local tables
        if_exists, db, name = truncate.group(1) or "", truncate.group(2), truncate.group(3)
        return [_TRUNCATE_TABLE.sub(f"TRUNCATE TABLE {if_exists}{db}.{name}{LOCAL_SUFFIX}", statement, count=1)]
    if drop := _DROP_TABLE.match(statement):
        if_exists, db, name = drop.group(1) or "", drop.group(2), drop.group(3)
        return [statement, _DROP_TABLE.sub(f"DROP TABLE {if_exists}{db}.{name}{LOCAL_SUFFIX}", statement, count=1)]
    return [statement]


def _with_replica_path(match: re.Match[str]) -> str:
    extra = f", {match.group(2)}" if match.group(2) else ""
    return f"{match.group(1)}('{REPLICA_PATH}', '{REPLICA_NAME}'{extra})"


def sharding_key(table: str, create_statement: str) -> str:
    """The Distributed sharding expression of a table: explicit, else a hash of its sorting key."""
    if table in SHARDING_KEYS:
        return SHARDING_KEYS[table]
    orders = _ORDER_BY.findall(create_statement)
    if not orders:
        return "rand()"
    key = orders[-1]
    return f"cityHash64{key}" if key.startswith("(") else f"cityHash64({key})"


async def apply_migrations(
    execute: Callable[[str], Awaitable[None]],
    applied_versions: Callable[[], Awaitable[set[int]]],
    record: Callable[[Migration], Awaitable[None]],
    *,
    database: str,
    cluster: str = "",
    directory: Path | None = None,
    bundled_engine: bool = False,
) -> list[Migration]:
    """Apply what is pending; return what was applied. Stops at the first failure."""
    pending = [m for m in discover(directory or migrations_dir()) if m.version not in await applied_versions()]
    for migration in pending:
        sql = migration.path.read_text()
        for statement in render(sql, database=database, cluster=cluster, bundled_engine=bundled_engine):
            try:
                await execute(statement)
            except Exception as exc:
                raise MigrationError(f"migration {migration.path.name} failed: {exc}") from exc
        await record(migration)
    return pending
