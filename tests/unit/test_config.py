"""Settings: config.toml documents the defaults, ARB_* overrides, errors name the key."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from arbitrage.cli import main
from arbitrage.config import Settings, load_settings, redacted
from arbitrage.errors import ConfigError

CONFIG = Path(__file__).resolve().parents[2] / "config.toml"


def test_config_toml_lists_every_key_with_its_default() -> None:
    assert tomllib.loads(CONFIG.read_text()) == msgspec.to_builtins(Settings())


def test_the_defaults_are_valid_values() -> None:
    assert load_settings(CONFIG, env={}) == Settings()


def test_every_key_in_config_toml_has_a_comment() -> None:
    lines = CONFIG.read_text().splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[number - 1].startswith("#"), f"config.toml line {number + 1} has no comment: {line}"


def test_environment_overrides_the_file_and_flags_override_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[server]\nport = 9000\n[kafka]\nenabled = false\n")
    env = {"ARB_SERVER__PORT": "9100", "ARB_KAFKA__ENABLED": "true", "ARB_STORAGE__DATA_DIR": "/srv/arb"}
    settings = load_settings(path, env=env)
    assert (settings.server.port, settings.kafka.enabled, settings.storage.data_dir) == (9100, True, "/srv/arb")
    assert load_settings(path, env=env, overrides={"server.port": 9200}).server.port == 9200


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ARB_SERVER__PORT": "eighty"}, "server.port"),
        ({"ARB_SERVER__PROT": "80"}, "server.prot"),
        ({"ARB_STORAGE__BACKEND": "sqlite"}, "storage.backend"),
        ({"ARB_NOPE__X": "1"}, "nope"),
        ({"ARB_DEMO__RATE": "inf"}, "demo.rate"),
        ({"ARB_INGEST__INSERT_LINGER_SECONDS": "inf"}, "ingest.insert_linger_seconds"),
        ({"ARB_STREAM__KEEPALIVE_SECONDS": "nan"}, "stream.keepalive_seconds"),
        ({"ARB_STORAGE__DATABASE": "my-db"}, "storage.database"),
        ({"ARB_STORAGE__DATABASE": "x; DROP TABLE t"}, "storage.database"),
        ({"ARB_STORAGE__DATA_DIR": ""}, "storage.data_dir"),
        ({"ARB_REDIS__URL": "127.0.0.1:6379"}, "redis.url"),
        ({"ARB_REDIS__URL": "localhost:6379"}, "redis.url"),
        ({"ARB_REDIS__URL": "redis://127.0.0.1:70000/0"}, "redis.url"),
    ],
)
def test_a_bad_key_or_value_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=rf"`{named}"):
        load_settings(env=env)


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[server]\nport = -1", "server.port"),
        ("[server]\nport = 99999", "server.port"),
        ("[server]\nworkers = 0", "server.workers"),
        ('[telemetry]\nlog_level = "LOUD"', "telemetry.log_level"),
        ("[telemetry]\nsample_ratio = 5.0", "telemetry.sample_ratio"),
        ("[ingest]\nmax_body_bytes = -1", "ingest.max_body_bytes"),
        ("[kafka]\npartitions = {risk = 0}", "kafka.partitions"),
        ("[stream]\nclient_queue_events = 0", "stream.client_queue_events"),
        ("[export]\nmax_concurrent_jobs = 0", "export.max_concurrent_jobs"),
        ("[schedule]\npoll_seconds = 0.0", "schedule.poll_seconds"),
        ("[schedule]\nmax_retries = -1", "schedule.max_retries"),
        ("[auth]\nrate_limit_per_minute = -1", "auth.rate_limit_per_minute"),
        ("[demo]\nrate = 0.0", "demo.rate"),
    ],
)
def test_a_value_out_of_its_range_stops_start_up_naming_the_key(
    toml: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml + "\n")
    assert main(["--config", str(path), "config", "show"]) == 2
    assert f"`{named}" in capsys.readouterr().err


def test_an_environment_value_is_read_as_its_key_type() -> None:
    settings = load_settings(
        env={
            "ARB_AUTH__ADMIN_TOKEN": "123456789012345678901234",
            "ARB_AUTH__JWT_ISSUER": "true",
            "ARB_STORAGE__CLUSTER": "2024",
            "ARB_KAFKA__GROUP_ID": "1.5",
            "ARB_AUTH__EXPORT_ROOTS": "/data/a, s3://bucket/prefix",
            "ARB_AUTH__CORS_ORIGINS": '["https://a.example", "https://b.example"]',
            "ARB_KAFKA__PARTITIONS": "{risk = 6}",
            "ARB_SCHEDULE__POLL_SECONDS": "2.5",
        }
    )
    assert (settings.auth.admin_token, settings.auth.jwt_issuer) == ("123456789012345678901234", "true")
    assert (settings.storage.cluster, settings.kafka.group_id) == ("2024", "1.5")
    assert settings.auth.export_roots == ["/data/a", "s3://bucket/prefix"]
    assert settings.auth.cors_origins == ["https://a.example", "https://b.example"]
    assert (settings.kafka.partitions.risk, settings.schedule.poll_seconds) == (6, 2.5)
    assert load_settings(env={"ARB_AUTH__EXPORT_ROOTS": ""}).auth.export_roots == []


def test_the_cli_exits_2_on_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARB_INGEST__MAX_BODY_BYTES", "lots")
    assert main(["config", "show"]) == 2
    assert "ingest.max_body_bytes" in capsys.readouterr().err


def test_secrets_are_redacted() -> None:
    settings = load_settings(
        env={"ARB_AUTH__ADMIN_TOKEN": "hunter2", "ARB_STORAGE__URL": "clickhouse://app:s3cret@127.0.0.1:9000/db"}
    )
    shown = msgspec.json.encode(redacted(settings)).decode()
    assert "hunter2" not in shown
    assert "s3cret" not in shown
    assert "clickhouse://app:***@127.0.0.1:9000/db" in shown


@pytest.mark.parametrize(
    ("key", "url", "secret"),
    [
        ("ARB_REDIS__URL", "redis://127.0.0.1:6379/0?password=hunter2", "hunter2"),
        ("ARB_REDIS__URL", "redis://:p@ss@127.0.0.1:6379/0", "ss@127"),
        ("ARB_STORAGE__HTTP_URL", "http://127.0.0.1:8123/?user=app&password=s3cret", "s3cret"),
        ("ARB_TELEMETRY__OTLP_ENDPOINT", "http://collector:4318/v1/traces?api_key=k3y&x=1", "k3y"),
        ("ARB_AUTH__EXPORT_ROOTS", "s3://AKIAEXAMPLE:wJalrSECRET@datasets/arb", "wJalrSECRET"),
    ],
)
def test_credentials_anywhere_in_a_url_are_redacted(key: str, url: str, secret: str) -> None:
    shown = msgspec.json.encode(redacted(load_settings(env={key: url}))).decode()
    assert secret not in shown


def test_secret_looking_pass_through_options_are_redacted() -> None:
    options = '{http = {headers = {Authorization = "Bearer tok3n"}}, az = {connection_string = "AccountKey=azk3y"}}'
    shown = msgspec.json.encode(redacted(load_settings(env={"ARB_EXPORT__STORAGE_OPTIONS": options}))).decode()
    assert "tok3n" not in shown
    assert "azk3y" not in shown


@pytest.mark.parametrize("secret", ["hunter2", "changeme-changeme", "é" * 15])
def test_a_jwt_secret_shorter_than_256_bits_stops_start_up_without_showing_it(secret: str) -> None:
    with pytest.raises(ConfigError, match=r"auth\.jwt_secret") as caught:
        load_settings(env={"ARB_AUTH__JWT_SECRET": secret})
    assert secret not in str(caught.value)


def test_a_jwt_secret_of_256_bits_or_more_is_taken() -> None:
    secret = "k" * 32
    assert load_settings(env={"ARB_AUTH__JWT_SECRET": secret}).auth.jwt_secret == secret


@pytest.mark.parametrize("overrides", [{"env": {"ARB_SERVER__PORT": "9000"}}, {"overrides": {"server.port": 9000}}])
def test_a_section_that_is_not_a_table_is_named_even_when_overridden(
    tmp_path: Path, overrides: dict[str, dict[str, Any]]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('server = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match="`server`"):
        load_settings(config, **{"env": {}, **overrides})


def test_a_table_from_the_environment_adds_to_the_files_table_so_one_secret_can_come_from_there(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[kafka.extra]\n"security.protocol" = "SASL_SSL"\n"sasl.username" = "app"\n[kafka.partitions]\nrisk = 5\n'
        '[export.storage_options."s3://bucket"]\nendpoint_url = "http://127.0.0.1:9000"\nkey = "id"\n'
    )
    settings = load_settings(
        config,
        env={
            "ARB_KAFKA__EXTRA": '{"sasl.password": "hunter2-hunter2"}',
            "ARB_KAFKA__PARTITIONS": "{dlq = 2}",
            "ARB_EXPORT__STORAGE_OPTIONS": '{"s3://bucket" = {secret = "s3cret"}}',
        },
    )
    assert settings.kafka.extra == {
        "security.protocol": "SASL_SSL",
        "sasl.username": "app",
        "sasl.password": "hunter2-hunter2",
    }
    assert (settings.kafka.partitions.risk, settings.kafka.partitions.dlq) == (5, 2)
    assert settings.export.storage_options["s3://bucket"] == {
        "endpoint_url": "http://127.0.0.1:9000",
        "key": "id",
        "secret": "s3cret",
    }


@pytest.mark.parametrize("value", ['{"sasl.password": "hunter2"', "sasl.password=hunter2", "[1, 2]"])
def test_a_table_variable_that_is_not_a_table_names_the_variable_and_not_its_value(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env={"ARB_KAFKA__EXTRA": value})
    assert "ARB_KAFKA__EXTRA" in str(raised.value) and "table" in str(raised.value)
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-1", "Expected `int` >= 0"),
        ("1", "0 (keep everything) or at least 3, got 1"),
        ("2", "0 (keep everything) or at least 3, got 2"),
        ("2.5", "Expected `int`, got `float`"),
        ("three", "Expected `int`, got `str`"),
    ],
)
def test_a_retention_under_3_days_or_not_a_whole_number_exits_2_naming_the_key(
    value: str, reason: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARB_STORAGE__RETENTION_DAYS", value)
    assert main(["config", "show"]) == 2
    assert f"`storage.retention_days`: {reason}" in capsys.readouterr().err


@pytest.mark.parametrize("days", [1, 2])
def test_a_retention_too_short_for_the_feature_warm_up_says_so(days: int) -> None:
    with pytest.raises(ConfigError, match=r"`storage\.retention_days`: 0 \(keep everything\) or at least 3.*48 h"):
        load_settings(env={}, overrides={"storage.retention_days": days})


def test_a_retention_of_0_or_3_days_and_more_is_taken_and_shown() -> None:
    assert load_settings(env={}).storage.retention_days == 0
    assert load_settings(env={"ARB_STORAGE__RETENTION_DAYS": "3"}).storage.retention_days == 3
    settings = load_settings(env={"ARB_STORAGE__RETENTION_DAYS": "365"})
    assert redacted(settings)["storage"]["retention_days"] == 365


def test_the_shortest_retention_keeps_a_whole_feature_warm_up_window() -> None:
    """Rows expire from `now - retention` back; the minimum is the fewest whole days that hold the window."""
    from arbitrage.config import MIN_RETENTION_DAYS
    from arbitrage.features import HISTORY_WINDOW

    assert timedelta(days=MIN_RETENTION_DAYS - 1) < HISTORY_WINDOW < timedelta(days=MIN_RETENTION_DAYS)


def test_a_config_file_that_is_not_utf8_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[server]\nport = 9000 # caf\xe9\n")
    assert main(["--config", str(path), "config", "show"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "utf-8" in err and "Traceback" not in err
