"""One exception hierarchy, mapped once to HTTP responses in `arbitrage.api`."""


class ArbitrageError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ArbitrageError):
    """The configuration file or an ARB_* variable names an unknown key or a bad value."""


class ValidationError(ArbitrageError):
    """Input broke the contract; `field` names where, as a JSON path like `legs[0].amount_in`."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class TooManyRecords(ArbitrageError):
    """A body holds more records than one request may (`ingest.max_records_per_body`)."""

    def __init__(self, limit: int, count: int | None = None) -> None:
        held = f"{count:,} records" if count is not None else f"more than {limit:,} records"
        super().__init__(f"the body holds {held}; at most {limit:,} per request: split it")
        self.count = count
        self.limit = limit


class WarehouseUnavailable(ArbitrageError):
    """The warehouse cannot serve a query or an insert right now."""


class WarehouseLocked(WarehouseUnavailable):
    """Another process owns the embedded warehouse's data directory."""


class MigrationError(ArbitrageError):
    """A migration file failed; the message names the file and ClickHouse's error."""


class Saturated(ArbitrageError):
    """Ingest queues are full; the caller should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"ingest is saturated, retry after {retry_after}s")
        self.retry_after = retry_after
