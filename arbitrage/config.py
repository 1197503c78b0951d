"""Typed settings from `config.toml`, overridden by `ARB_<SECTION>__<KEY>` variables.

Each field's docstring is the documentation of its `config.toml` key. Unknown keys and
bad values raise `ConfigError` naming the key, which the CLI turns into exit code 2.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
import msgspec.inspect

from arbitrage.errors import ConfigError

ENV_PREFIX = "ARB_"
SECRET_KEYS = frozenset(
    {"admin_token", "jwt_secret", "s3_access_key_id", "s3_secret_access_key", "password", "sasl_password"}
)

Count = Annotated[int, msgspec.Meta(ge=1)]
"""Sizes, limits and counts: 0 or less would refuse everything or wait forever."""
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
FINITE_LIMIT = 1e9
"""Upper bound of the float settings: infinity is no period (and `serve` hands the settings to
its worker as JSON, which has no infinity)."""
Interval = Annotated[float, msgspec.Meta(gt=0, le=FINITE_LIMIT)]
"""Periods, lifetimes and rates: 0 would spin, expire at once or divide by zero."""
Delay = Annotated[float, msgspec.Meta(ge=0, le=FINITE_LIMIT)]
"""Waits and lags, where 0 means none."""
Name = Annotated[str, msgspec.Meta(min_length=1)]
"""Names a client cannot do without: librdkafka aborts the process on an empty group id."""
Identifier = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")]
"""A ClickHouse name written into SQL as it is (a database): letters, digits and `_`."""


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    """Address to bind: an IP address, or a host name (bound at its IPv4 address when it has one). Anything but loopback requires auth (see [auth])."""
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8080
    """TCP port of the HTTP API."""
    workers: Count = 1
    """Granian workers. The embedded warehouse allows only one process, so keep 1 with it."""
    stop_timeout_seconds: Annotated[int, msgspec.Meta(ge=1, le=1800)] = 30
    """How long a stop (SIGTERM, Ctrl-C) waits for open requests and streams (an SSE client stays
    until it leaves) before the worker is killed; what was acknowledged is stored either way."""


class StorageSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    backend: Literal["embedded", "clickhouse"] = "embedded"
    """`embedded` runs ClickHouse in-process (chdb); `clickhouse` talks to a server."""
    data_dir: Name = "./data"
    """Where the embedded warehouse keeps its data; one process owns it at a time."""
    url: str = ""
    """Server URL for the clickhouse backend, e.g. clickhouse://user:pass@127.0.0.1:9000/arbitrage."""
    http_url: str = ""
    """HTTP interface of the server for Arrow bulk inserts; derived from `url` (port 8123) when empty."""
    cluster: str = ""
    """ClickHouse cluster name: migrations create replicated tables ON CLUSTER with Distributed fronts."""
    database: Identifier = "arbitrage"
    """Database that holds the tables."""
    pool_size: Count = 8
    """Connections in the clickhouse backend's pool."""
    max_concurrent_queries: Count = 4
    """Warehouse queries allowed at once; further requests wait their turn."""
    retention_days: NonNegative = 0
    """Days of transactions and dead letters kept, by block time and receipt (0 = everything; else at least 3).
    ClickHouse drops older rows in whole parts, so up to a month more stays on disk; daily stats keep all days."""


class IngestSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_body_bytes: Count = 64 * 1024 * 1024
    """Largest accepted request body for POST /ingest; larger bodies get 413."""
    max_records_per_body: Count = 200_000
    """Most records one POST /ingest body may hold (413 beyond): each rejected record costs
    hundreds of bytes of memory and of response, so a body of tiny bad records is refused whole."""
    max_pending_batches: Count = 16
    """Batches allowed to wait for the warehouse; beyond it ingest answers 503 + Retry-After.
    Each holds its body and rows in memory; 16 keeps both cores busy with 10k-record batches."""
    insert_min_rows: Count = 50_000
    """Under load, an insert waits for batches already admitted until it holds this many rows..."""
    insert_linger_seconds: Delay = 0.25
    """...or for this long at most (0: never wait). A lone batch is inserted at once."""
    recent_buffer: Count = 10_000
    """Newest stored transactions kept in memory for the first pages of /transactions (embedded warehouse only)."""


class KafkaPartitions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Partition count per topic (`kafka.topic_<name>`); a struct so that a misspelt topic is refused."""

    transactions: Count = 10
    opportunities: Count = 5
    risk: Count = 3
    dlq: Count = 1


class KafkaSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    """Consume `topic_transactions` beside the HTTP server."""
    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated broker addresses, host:port each."""
    group_id: Name = "arbitrage-backend"
    """Consumer group of the ingest consumer."""
    topic_transactions: Name = "arbitrage-transactions"
    """Topic of contract records, signature as key."""
    topic_opportunities: Name = "arbitrage-opportunities"
    """Profitable stored transactions are produced here."""
    topic_risk: Name = "risk-metrics"
    """Risk metrics of stored transactions are produced here."""
    topic_dlq: Name = "arbitrage-dlq"
    """Messages that fail decoding or validation, with the reason in headers."""
    topic_relay_progress: Name = "arbitrage-relay-progress"
    """How far each process published the derived records of other sources (one partition). The topics must differ."""
    publish_other_sources: bool = True
    """Also produce the derived records of transactions stored through HTTP, files, replays or the demo."""
    opportunity_omit: list[str] = msgspec.field(default_factory=lambda: ["features"])
    """Top-level keys of the API's transaction JSON left out of each opportunity (`signature` stays):
    the feature vector is over 40% of its bytes and of the consumer's CPU for it. [] = the whole row."""
    batch_size: Count = 50_000
    """Records per warehouse insert: at 10,000 a record took 85 µs of CPU instead of ~52 (docs/kafka.md)."""
    batch_timeout_ms: Count = 500
    """Longest wait before a partial batch is stored."""
    align_wait_ms: NonNegative = 5000
    """Partitions are handed over in message-time order (a backlog's batches then span its time once, not
    each partition's own stretch); a partition that sends nothing this long stops holding the others back. 0 = off."""
    extra: dict[str, str] = msgspec.field(default_factory=dict)
    """Passed through to librdkafka (security.protocol, sasl.*, ...); checked by librdkafka at start-up."""
    transactional: bool = True
    """Produce derived topics and commit offsets in one Kafka transaction; false commits with the consumer."""
    transactional_id: str = ""
    """Fences a crashed predecessor's open transaction; empty = `<group_id>-<topic_transactions>-<host>-<port>`, one per instance."""
    partitions: KafkaPartitions = msgspec.field(default_factory=KafkaPartitions)
    """Partition counts used when topics are created at start-up; a topic left out keeps its count."""
    create_topics: bool = True
    """Create missing topics at start-up (brokers without CreateTopics fall back to auto-creation)."""


class RedisSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = ""
    """redis://127.0.0.1:6379/0 to share cache, rate limits and fan-out across processes; empty = memory."""
    cache_ttl_seconds: Interval = 2.0
    """Lifetime of cached hot read responses."""
    key_prefix: str = "arbitrage"
    """Prefix of every Redis key and channel, so deployments can share one Redis."""


class StreamSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    keepalive_seconds: Interval = 15.0
    """Idle SSE streams get a comment line this often, so proxies keep them open."""
    replay_buffer: Count = 10_000
    """Newest stream events kept in memory for clients resuming with Last-Event-ID; older ones come from the warehouse."""
    client_queue_events: Count = 20_000
    """Events one SSE/WebSocket client may have waiting; beyond it the client is dropped, not the feed slowed."""
    reorder_timeout_seconds: Delay = 2.0
    """How long a batch waits for an earlier position another process is still storing before it is delivered past the gap."""


class ExportSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    dir: str = "./exports"
    """Default destination of exports."""
    max_concurrent_jobs: Count = 2
    """Export jobs that run at once; others wait queued."""
    s3_endpoint_url: str = ""
    """S3 endpoint for s3:// destinations (empty = AWS)."""
    s3_access_key_id: str = ""
    """S3 access key; empty = the environment or instance credentials."""
    s3_secret_access_key: str = ""
    """S3 secret key; never shown."""
    s3_region: str = ""
    """S3 region name."""
    storage_options: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """Extra fsspec options per protocol, e.g. {gcs = {token = "..."}}; never shown."""


class ScheduleSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    """Run the schedule loop in this process."""
    run_missed_on_startup: bool = True
    """Run once at start-up a schedule whose due time passed while down."""
    max_retries: NonNegative = 3
    """Extra attempts after a failed scheduled run."""
    retry_backoff_seconds: Delay = 30.0
    """Wait before the first retry; doubles each time."""
    poll_seconds: Interval = 15.0
    """How often due schedules are checked."""
    watermark_lag_seconds: Delay = 5.0
    """Incremental runs leave out rows ingested in the last seconds."""


class AuthSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    """Require credentials on every route but /health, /metrics, the status page / and the API docs /schema."""
    admin_token: str = ""
    """Admin credential; when empty, read from `admin_token_file` or generated into it on first start."""
    admin_token_file: str = ""
    """Where the generated admin credential is kept (mode 600); empty = `<storage.data_dir>/admin_token`."""
    jwt_secret: str = ""
    """HS256 shared secret for JWT bearer tokens, at least 32 bytes; empty = HS256 tokens are refused."""
    jwt_public_key: str = ""
    """RS256 public key (PEM text or a path to a PEM file); empty = RS256 tokens are refused."""
    jwt_issuer: str = ""
    """Required `iss` claim of JWTs; empty = not checked."""
    jwt_audience: str = ""
    """Required `aud` claim of JWTs; empty = not checked."""
    rate_limit_per_minute: NonNegative = 600
    """Requests per minute per API key, token subject or client address (Redis-shared with redis.url); 0 = off."""
    rate_limit_burst: Count = 100
    """Requests a client may make at once before the per-minute rate applies."""
    cors_origins: list[str] = msgspec.field(default_factory=list)
    """Origins allowed to call the API from a browser (CORS); empty = CORS off."""
    export_roots: list[str] = msgspec.field(default_factory=list)
    """Destinations exports may write to besides export.dir: directories or URL prefixes (s3://bucket/prefix)."""


class DemoSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    """Feed simulated transactions into the running server (same as `serve --demo`)."""
    rate: Interval = 200.0
    """Simulated transactions per second."""


class TelemetrySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Root log level: DEBUG, INFO, WARNING, ERROR or CRITICAL."""
    log_format: Literal["console", "json"] = "console"
    """Log line format."""
    tracing: Literal["none", "console", "otlp"] = "none"
    """OpenTelemetry span exporter: none, console (stderr) or otlp (OTLP/HTTP to otlp_endpoint)."""
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    """OTLP/HTTP traces endpoint used when tracing = "otlp"."""
    service_name: str = "arbitrage"
    """service.name of exported spans (tell processes apart with e.g. arbitrage-ingest-2)."""
    sample_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0
    """Share of new traces recorded, 0.0-1.0 (a sampled parent keeps its children)."""


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    ingest: IngestSettings = msgspec.field(default_factory=IngestSettings)
    kafka: KafkaSettings = msgspec.field(default_factory=KafkaSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    stream: StreamSettings = msgspec.field(default_factory=StreamSettings)
    export: ExportSettings = msgspec.field(default_factory=ExportSettings)
    schedule: ScheduleSettings = msgspec.field(default_factory=ScheduleSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    demo: DemoSettings = msgspec.field(default_factory=DemoSettings)
    telemetry: TelemetrySettings = msgspec.field(default_factory=TelemetrySettings)


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read settings: file, then `ARB_*` environment, then `overrides` ("section.key" → value).

    A missing file is fine only when no path was asked for explicitly.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}")
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{file}: {exc.strerror}") from None
    for name, value in (env if env is not None else os.environ).items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
            table = _table(raw, section)
            parsed = _parse_env_value(value, _field_types().get((section, key)), name)
            table[key] = _merged(table[key], parsed) if isinstance(table.get(key), dict) else parsed
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        _table(raw, section)[key] = value
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_name_key(str(exc))}") from exc
    _check_kafka(settings.kafka)
    _check_redis_url(settings.redis.url)
    _check_retention(settings.storage.retention_days)
    _check_jwt_secret(settings.auth.jwt_secret)
    return settings


def _table(raw: dict[str, Any], section: str) -> dict[str, Any]:
    """The section's table to set an override in; a section the file gave a plain value
    (`server = "0.0.0.0"`) is a `ConfigError` naming it, not a `TypeError`."""
    table = raw.setdefault(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"invalid configuration: `{section}`: expected a table ([{section}]), got a value")
    return table


def default_config_path() -> Path | None:
    """`ARB_CONFIG` if set, else `./config.toml` when it exists."""
    explicit = os.environ.get("ARB_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("config.toml")
    return local if local.is_file() else None


def redacted(settings: Settings) -> dict[str, Any]:
    """Settings as plain data with every secret replaced, for logs and /admin/config."""
    data: dict[str, Any] = msgspec.to_builtins(settings)
    for section in data.values():
        for key in section:
            section[key] = "***" if key in SECRET_KEYS and section[key] else _redact_value(section[key])
    return data


_SECRET_WORDS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
    "connection_str",
    "conn_str",
    "sig",
)
_AUTHORITY = re.compile(r"^([^:/?#]+://)([^/?#]*)")
_QUERY_PAIR = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")


def _redact_url(url: str) -> str:
    """Hide a URL's password and secret-looking query values (`?password=`, which redis-py
    and ClickHouse's HTTP interface read). The password may hold a raw `@`: URL parsers
    split user info from host at the last `@` of the authority."""
    match = _AUTHORITY.match(url)
    if match and "@" in match.group(2):
        userinfo, _, host = match.group(2).rpartition("@")
        user, colon, _ = userinfo.partition(":")
        url = f"{match.group(1)}{user}{colon and ':***'}@{host}{url[match.end() :]}"
    return _QUERY_PAIR.sub(
        lambda pair: f"{pair[1]}{pair[2]}=***" if _looks_secret(pair[2]) and pair[3] else pair[0], url
    )


def _looks_secret(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


def _redact_value(value: Any) -> Any:
    """URLs lose their credentials; pass-through option tables (kafka.extra, storage options) the
    values of their secret-looking keys; lists (export roots) both, item by item."""
    if isinstance(value, str) and "://" in value:
        return _redact_url(value)
    if isinstance(value, dict):
        return {
            k: "***" if v and _looks_secret(k) and not isinstance(v, dict) else _redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_value(item) for item in value]
    return value


@cache
def _field_types() -> dict[tuple[str, str], msgspec.inspect.Type]:
    """(section, key) → the key's type, which decides how an `ARB_*` value is read."""
    settings = msgspec.inspect.type_info(Settings)
    assert isinstance(settings, msgspec.inspect.StructType)
    return {
        (section.name, key.name): key.type
        for section in settings.fields
        if isinstance(section.type, msgspec.inspect.StructType)
        for key in section.type.fields
    }


def _parse_env_value(value: str, kind: msgspec.inspect.Type | None, name: str) -> Any:
    """An `ARB_*` value as its key's type asks for it.

    A string key takes the text as is (an all-digit token stays a token); a list of strings
    takes comma-separated items, or a TOML array; a table a TOML inline table or a JSON
    object; anything else is a TOML literal when it parses as one, else the text, which the
    key's type then refuses by name.
    """
    if _is_text(kind):
        return value
    if isinstance(kind, msgspec.inspect.ListType) and _is_text(kind.item_type) and not value.lstrip().startswith("["):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(kind, msgspec.inspect.DictType | msgspec.inspect.StructType):
        return _parse_env_table(value, name)
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _parse_env_table(value: str, name: str) -> dict[str, Any]:
    table: Any = None
    with contextlib.suppress(tomllib.TOMLDecodeError):
        table = tomllib.loads(f"v = {value}")["v"]
    if not isinstance(table, dict):
        with contextlib.suppress(msgspec.DecodeError):
            table = msgspec.json.decode(value)
    if not isinstance(table, dict):
        raise ConfigError(
            f"invalid configuration: `{name}` must be a table, as a TOML inline table "
            '({key = "value"}) or a JSON object ({"key": "value"})'
        )
    return table


def _merged(base: dict[str, Any], override: Any) -> Any:
    """A table from the environment merged into the file's, key by key (nested tables too), so a
    variable can add one secret (`ARB_KAFKA__EXTRA='{"sasl.password" = "…"}'`) to the rest."""
    if not isinstance(override, dict):
        return override
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merged(merged[key], value) if isinstance(merged.get(key), dict) else value
    return merged


def _is_text(kind: msgspec.inspect.Type | None) -> bool:
    return isinstance(kind, msgspec.inspect.StrType) or (
        isinstance(kind, msgspec.inspect.LiteralType) and all(isinstance(v, str) for v in kind.values)
    )


_BROKERS = re.compile(r"[^\s,]+:[0-9]+(,\s*[^\s,]+:[0-9]+)*")


KAFKA_MANAGED_PROPERTIES = {
    "bootstrap.servers": "set `kafka.bootstrap_servers`",
    "metadata.broker.list": "set `kafka.bootstrap_servers`",
    "group.id": "set `kafka.group_id`",
    "transactional.id": "set `kafka.transactional_id`",
    "enable.auto.commit": "offsets are committed only once their batch is stored",
    "enable.auto.offset.store": "offsets are committed only once their batch is stored",
    "isolation.level": "the consumer reads committed records only",
    "enable.idempotence": "exactly-once needs an idempotent producer",
    "compression.type": "the derived topics are LZ4-compressed",
}
"""librdkafka properties the ingest sets itself, and why `kafka.extra` may not: set there they were
silently overridden. Tuning ones (`session.timeout.ms`, `linger.ms`, ...) given in `extra` win."""


_NESTED_KEYS = frozenset({"features", "risk"})
"""Keys of a rendered transaction that are no stored column's name."""


def _check_opportunity_omit(omit: list[str]) -> None:
    if set(omit) <= _NESTED_KEYS:  # the default: every command loads settings, and the schema loads polars
        return
    from arbitrage.stream import FIELD_NAMES

    unknown = sorted(set(omit) - FIELD_NAMES)
    if unknown:
        raise ConfigError(
            f"invalid configuration: `kafka.opportunity_omit`: {', '.join(map(repr, unknown))} "
            f"is not a key of a transaction (one of {', '.join(sorted(FIELD_NAMES))})"
        )
    if "signature" in omit:
        raise ConfigError("invalid configuration: `kafka.opportunity_omit`: an opportunity always keeps its signature")


def _check_kafka(kafka: KafkaSettings) -> None:
    """What the key types cannot say: brokers, distinct topics, `extra` as librdkafka reads it.

    A broker list librdkafka cannot read starts fine and never connects; a dead letter
    produced to the consumed topic comes back forever; a property librdkafka refuses
    fails only in the background task that starts the consumer.
    """
    if not _BROKERS.fullmatch(kafka.bootstrap_servers) or not all(
        1 <= int(server.rpartition(":")[2]) <= 65_535 for server in kafka.bootstrap_servers.split(",")
    ):
        raise ConfigError(
            f"invalid configuration: `kafka.bootstrap_servers`: expected host:port[,host:port] (ports 1-65535), "
            f"got {kafka.bootstrap_servers!r}"
        )
    for name in kafka.extra:
        if name in KAFKA_MANAGED_PROPERTIES:
            raise ConfigError(
                f"invalid configuration: `kafka.extra`: {name!r} is set by arbitrage ({KAFKA_MANAGED_PROPERTIES[name]})"
            )
    _check_opportunity_omit(kafka.opportunity_omit)
    seen: dict[str, str] = {}
    for key in ("topic_transactions", "topic_opportunities", "topic_risk", "topic_dlq", "topic_relay_progress"):
        topic = getattr(kafka, key)
        if topic in seen:
            raise ConfigError(f"invalid configuration: `kafka.{key}`: same topic as kafka.{seen[topic]}")
        seen[topic] = key
    if not kafka.enabled:
        return
    from confluent_kafka import KafkaException  # here: loading librdkafka only matters with Kafka on

    from arbitrage.ingest.kafka._options import KafkaOptions  # here: it imports this module

    try:
        KafkaOptions.from_settings(kafka).check_clients()
    except KafkaException as exc:
        reason = exc.args[0].str()
        for value in kafka.extra.values():
            reason = reason.replace(f'"{value}"', '"***"')  # a refused value may be a secret: not shown, nor chained
        raise ConfigError(f"invalid configuration: `kafka.extra`: {reason}") from None


REDIS_SCHEMES = ("redis", "rediss", "unix")


def _check_redis_url(url: str) -> None:
    """A URL redis-py cannot open fails only in the server's worker, after it listens."""
    if not url:
        return
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port out of range or not a number
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: `redis.url`: {exc}") from None
    if parts.scheme not in REDIS_SCHEMES or not (parts.hostname or parts.path):
        raise ConfigError(
            "invalid configuration: `redis.url`: expected redis://host:port/db, rediss://… or unix:///path, "
            f"got {'a URL without a scheme' if not parts.scheme else repr(parts.scheme + '://…')}"
        )


MIN_RETENTION_DAYS = 3
"""A restart warms the feature engine on the 48 h 15 min before the newest stored row
(`arbitrage.features.HISTORY_WINDOW`): the fewest whole days that keep that window stored."""


def _check_retention(days: int) -> None:
    if 0 < days < MIN_RETENTION_DAYS:
        raise ConfigError(
            f"invalid configuration: `storage.retention_days`: 0 (keep everything) or at least "
            f"{MIN_RETENTION_DAYS}, got {days}: the feature engine warms up on the last 48 h 15 min of "
            "transactions at start-up"
        )


MIN_JWT_SECRET_BYTES = 32


def _check_jwt_secret(secret: str) -> None:
    """HS256 needs a key at least as long as its hash (RFC 7518 §3.2): anyone holding one
    token can test guesses of a shorter secret offline, unthrottled, and then mint admin tokens."""
    size = len(secret.encode())
    if 0 < size < MIN_JWT_SECRET_BYTES:
        raise ConfigError(
            f"invalid configuration: `auth.jwt_secret`: at least {MIN_JWT_SECRET_BYTES} bytes, got {size} "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )


def _name_key(message: str) -> str:
    """Turn msgspec's `... - at `$.server.port`` into `server.port: ...`."""
    match = re.search(r"^(.*?)(?: - at `\$\.?(.*)`)?$", message)
    reason, where = (match.group(1), match.group(2) or "") if match else (message, "")
    field = re.search(r"unknown field `([^`]+)`", reason)
    if field:
        return f"unknown key `{where + '.' if where else ''}{field.group(1)}`"
    return f"`{where}`: {reason}" if where else reason
