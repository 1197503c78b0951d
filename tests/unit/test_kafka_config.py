"""`[kafka]` settings the consumer cannot run with stop start-up naming the key."""

from __future__ import annotations

import logging
import re
import socket

import pytest

from arbitrage.cli import main
from arbitrage.config import load_settings
from arbitrage.errors import ConfigError


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ARB_KAFKA__GROUP_ID": ""}, "kafka.group_id"),
        ({"ARB_KAFKA__BOOTSTRAP_SERVERS": ""}, "kafka.bootstrap_servers"),
        ({"ARB_KAFKA__BOOTSTRAP_SERVERS": "broker-1"}, "kafka.bootstrap_servers"),
        ({"ARB_KAFKA__BOOTSTRAP_SERVERS": "broker-1:9092,"}, "kafka.bootstrap_servers"),
        ({"ARB_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:84628"}, "kafka.bootstrap_servers"),  # librdkafka: 19092
        ({"ARB_KAFKA__BOOTSTRAP_SERVERS": "broker-1:9092,broker-2:0"}, "kafka.bootstrap_servers"),
        ({"ARB_KAFKA__TOPIC_DLQ": ""}, "kafka.topic_dlq"),
    ],
)
def test_empty_names_and_malformed_brokers_are_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=rf"`{named}`"):
        load_settings(env=env)


@pytest.mark.parametrize("brokers", ["broker-1:9092", "broker-1:9092,broker-2:9093", "10.0.0.1:9092, [::1]:9092"])
def test_broker_lists_are_accepted(brokers: str) -> None:
    assert load_settings(env={"ARB_KAFKA__BOOTSTRAP_SERVERS": brokers}).kafka.bootstrap_servers == brokers


def test_the_cli_exits_2_on_an_empty_group_id(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARB_KAFKA__ENABLED", "true")
    monkeypatch.setenv("ARB_KAFKA__GROUP_ID", "")
    assert main(["config", "show"]) == 2
    assert "`kafka.group_id`" in capsys.readouterr().err


def test_an_unknown_partition_key_is_named_and_a_partial_table_keeps_the_other_defaults() -> None:
    with pytest.raises(ConfigError, match=r"unknown key `kafka\.partitions\.txs`"):
        load_settings(env={"ARB_KAFKA__PARTITIONS": "{txs = 3}"})
    partitions = load_settings(env={"ARB_KAFKA__PARTITIONS": "{risk = 6}"}).kafka.partitions
    assert (partitions.transactions, partitions.opportunities, partitions.risk, partitions.dlq) == (10, 5, 6, 1)


@pytest.mark.parametrize(
    ("env", "named", "other"),
    [
        ({"ARB_KAFKA__TOPIC_DLQ": "arbitrage-transactions"}, "kafka.topic_dlq", "kafka.topic_transactions"),
        ({"ARB_KAFKA__TOPIC_RISK": "arbitrage-transactions"}, "kafka.topic_risk", "kafka.topic_transactions"),
        ({"ARB_KAFKA__TOPIC_DLQ": "risk-metrics"}, "kafka.topic_dlq", "kafka.topic_risk"),
        ({"ARB_KAFKA__TOPIC_TRANSACTIONS": "arbitrage-dlq"}, "kafka.topic_dlq", "kafka.topic_transactions"),
    ],
)
def test_a_topic_used_twice_is_refused(env: dict[str, str], named: str, other: str) -> None:
    with pytest.raises(ConfigError, match=rf"`{named}`.*{other}"):
        load_settings(env=env)


def test_a_bad_librdkafka_property_is_named_when_kafka_is_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARB_KAFKA__ENABLED", "true")
    monkeypatch.setenv("ARB_KAFKA__EXTRA", '{"no.such.property" = "x"}')
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert "`kafka.extra`" in err
    assert "no.such.property" in err


@pytest.mark.parametrize(
    "extra",
    [
        {"linger.ms": "maybe"},
        {"max.in.flight.requests.per.connection": "10"},
        {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.password": "hunter2"},
    ],
)
def test_values_and_combinations_librdkafka_refuses_are_named(extra: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"`kafka\.extra`") as refused:
        load_settings(env={}, overrides={"kafka.enabled": True, "kafka.extra": extra})
    assert "hunter2" not in str(refused.value)


def test_a_refused_value_is_not_shown() -> None:
    extra = {"security.protocol": "s3cret-by-mistake"}
    with pytest.raises(ConfigError, match=r"`kafka\.extra`.*security\.protocol") as refused:
        load_settings(env={}, overrides={"kafka.enabled": True, "kafka.extra": extra})
    assert "s3cret-by-mistake" not in str(refused.value)


def test_extra_is_checked_without_connecting_and_only_when_kafka_is_on(capfd: pytest.CaptureFixture[str]) -> None:
    broker = socket.create_server(("127.0.0.1", 0))
    broker.settimeout(0.5)
    extra = {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password": "p"}
    brokers = f"127.0.0.1:{broker.getsockname()[1]}"
    on = {"kafka.enabled": True, "kafka.bootstrap_servers": brokers, "kafka.extra": extra}
    with broker:
        assert load_settings(env={}, overrides=on).kafka.extra == extra
        with pytest.raises(TimeoutError):
            broker.accept()
    with pytest.raises(ConfigError):
        load_settings(
            env={}, overrides={**on, "kafka.extra": {"security.protocol": "SSL", "ssl.ca.location": "/no/ca"}}
        )
    assert capfd.readouterr().err == ""
    off = {"kafka.enabled": False, "kafka.extra": {"no.such.property": "x"}}
    assert load_settings(env={}, overrides=off).kafka.extra == {"no.such.property": "x"}


def test_each_instance_gets_its_own_default_transactional_id_and_a_set_one_wins() -> None:
    """One id for two instances made each fence the other; a restarted instance must keep its own."""
    from arbitrage.ingest.kafka import KafkaOptions

    kafka = load_settings(env={}).kafka
    ids = {KafkaOptions.from_settings(kafka, instance=instance).txn_id for instance in ("a-8080", "a-8081", "b-8080")}
    assert len(ids) == 3
    assert KafkaOptions.from_settings(kafka, instance="a-8080").txn_id in ids
    chosen = load_settings(env={"ARB_KAFKA__TRANSACTIONAL_ID": "mine"}).kafka
    assert KafkaOptions.from_settings(chosen, instance="a-8080").txn_id == "mine"


@pytest.mark.parametrize("name", ["enable.auto.commit", "isolation.level", "compression.type", "group.id"])
def test_a_property_the_ingest_sets_itself_is_refused_in_extra_naming_it(name: str) -> None:
    """Given in `extra` it used to be overridden without a word."""
    with pytest.raises(ConfigError, match=f"`kafka.extra`: '{re.escape(name)}' is set by arbitrage"):
        load_settings(env={}, overrides={"kafka.extra": {name: "x"}})


def test_tuning_given_in_extra_wins_over_the_defaults() -> None:
    from arbitrage.ingest.kafka import KafkaOptions

    extra = {"session.timeout.ms": "45000", "max.poll.interval.ms": "600000", "linger.ms": "5"}
    options = KafkaOptions.from_settings(load_settings(env={}, overrides={"kafka.extra": extra}).kafka)
    consumer, producer = options.consumer_config(), options.producer_config()
    assert (consumer["session.timeout.ms"], consumer["max.poll.interval.ms"]) == ("45000", "600000")
    assert (consumer["enable.auto.commit"], consumer["isolation.level"]) == (False, "read_committed")
    assert (producer["linger.ms"], producer["compression.type"], producer["enable.idempotence"]) == ("5", "lz4", True)


def test_librdkafka_logs_through_the_apps_logging_not_raw_to_stderr(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """With `log_format = "json"` its raw lines broke one-object-per-line (a broker away: 7-15 a second)."""
    from confluent_kafka import KafkaException

    from arbitrage.ingest.kafka import KafkaOptions
    from arbitrage.ingest.kafka._topics import ensure_topics

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once the socket is closed
    options = KafkaOptions.from_settings(
        load_settings(env={}, overrides={"kafka.bootstrap_servers": f"127.0.0.1:{port}"}).kafka
    )
    with caplog.at_level(logging.INFO, logger="arbitrage.kafka.librdkafka"), pytest.raises(KafkaException):
        ensure_topics(options, timeout_s=1.0)
    assert any("Connection refused" in r.getMessage() for r in caplog.records if r.name == "arbitrage.kafka.librdkafka")
    assert "Connection refused" not in capfd.readouterr().err
