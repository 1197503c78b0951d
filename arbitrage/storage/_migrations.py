"""Apply `migrations/NNN_name.sql` in order, each once, recorded in `schema_migrations`.

Files are plain ClickHouse SQL with a few placeholders, so the same files serve the
embedded engine, a single server and a cluster:
`${db}` the database, `${on_cluster}` (empty or `ON CLUSTER name`),
`${replacing_merge_tree}`, `${merge_tree}`, `${summing_merge_tree}` (replicated on a cluster).
Statements are separated by a `;` at the end of a line.
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


def render(sql: str, *, database: str, cluster: str) -> list[str]:
    """Substitute the placeholders and split into statements."""
    on_cluster = f"ON CLUSTER {cluster}" if cluster else ""
    replicated = "Replicated" if cluster else ""
    values = {
        "db": database,
        "on_cluster": on_cluster,
        "replacing_merge_tree": f"{replicated}ReplacingMergeTree",
        "merge_tree": f"{replicated}MergeTree",
        "summing_merge_tree": f"{replicated}SummingMergeTree",
    }
    text = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], sql)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [stmt.strip() for stmt in re.split(r";\s*$", text, flags=re.MULTILINE) if stmt.strip()]


async def apply_migrations(
    execute: Callable[[str], Awaitable[None]],
    applied_versions: Callable[[], Awaitable[set[int]]],
    record: Callable[[Migration], Awaitable[None]],
    *,
    database: str,
    cluster: str = "",
    directory: Path | None = None,
) -> list[Migration]:
    """Apply what is pending; return what was applied. Stops at the first failure."""
    pending = [m for m in discover(directory or migrations_dir()) if m.version not in await applied_versions()]
    for migration in pending:
        for statement in render(migration.path.read_text(), database=database, cluster=cluster):
            try:
                await execute(statement)
            except Exception as exc:
                raise MigrationError(f"migration {migration.path.name} failed: {exc}") from exc
        await record(migration)
    return pending
