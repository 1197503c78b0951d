"""Settings: config.toml documents the defaults, ARB_* overrides, errors name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest

from arbitrage.cli import main
from arbitrage.config import Settings, load_settings, redacted
from arbitrage.errors import ConfigError

CONFIG = Path(__file__).resolve().parents[2] / "config.toml"


def test_config_toml_lists_every_key_with_its_default() -> None:
    assert tomllib.loads(CONFIG.read_text()) == msgspec.to_builtins(Settings())


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
    ],
)
def test_a_bad_key_or_value_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=rf"`{named}"):
        load_settings(env=env)


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
