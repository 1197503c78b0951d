"""The CLI answers a mistake with one line naming the argument: exit 2 for a bad argument
(argparse style), 1 for a runtime failure, never a traceback."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from arbitrage.cli import _parser, main

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["simulate", "--count", "-5"], "--count"),
        (["simulate", "--rate", "-1"], "--rate"),
        (["simulate", "--batch-size", "0"], "--batch-size"),
        (["simulate", "--url", "127.0.0.1:8080/ingest"], "--url"),
        (["ingest", "--batch-size", "0", "{file}"], "--batch-size"),
        (["ingest", "{dir}"], "is a directory"),
        (["ingest", "{dir}/missing.ndjson"], "no such file"),
        (["export", "csv", "--out", "{dir}", "--partition-by", "week"], "--partition-by"),
        (["export", "csv", "--out", "{dir}", "--split", "0.7,0.2"], "--split"),
        (["export", "csv", "--out", "{dir}", "--split", "a,b,c"], "--split"),
        (["export", "csv", "--out", "{dir}", "--split", "2,-0.5,-0.5"], "--split"),
        (["export", "csv", "--out", "{dir}", "--split", "0.7,0.2,0.2"], "must be 1"),
        (["export", "csv", "--out", "{dir}", "--chunk-rows", "0"], "--chunk-rows"),
        (["export", "csv", "--out", "{dir}", "--min-profit", "nan"], "--min-profit"),
        (["simulate", "--count", "1", "--rate", "inf"], "--rate"),
        (["keys", "--data-dir", "{dir}", "create", "--expires-in-days", "0"], "--expires-in-days"),
        (["keys", "--data-dir", "{dir}", "create", "--expires-in-days", "4000"], "--expires-in-days"),
        (["keys", "--data-dir", "{dir}", "create", "--name", "x" * 201], "--name"),
        (["keys", "--data-dir", "{dir}", "create", "--name", "tab\there"], "--name"),
        (["keys", "--url", "http://192.0.2.1:8080", "list"], "--url"),
        (["keys", "list", "--url", "ftp://127.0.0.1"], "--url"),
    ],
)
def test_a_bad_argument_exits_2_naming_it(
    argv: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "records.ndjson"
    file.write_text("{}\n")
    with pytest.raises(SystemExit) as exited:
        main([arg.format(file=file, dir=tmp_path) for arg in argv])
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("arbitrage ") and named in error


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "--count", "3", "--out", "/nonexistent/x.ndjson"], "/nonexistent/x.ndjson: No such file"),
        (["simulate", "--count", "3", "--url", "http://127.0.0.1:{port}/ingest"], "http://127.0.0.1:{port}/ingest: "),
    ],
)
def test_a_runtime_failure_exits_1_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    assert main([arg.format(port=port) for arg in argv]) == 1
    [error] = capsys.readouterr().err.splitlines()
    assert error.startswith(f"arbitrage: {message.format(port=port)}")


def test_the_keys_commands_in_the_security_guide_parse() -> None:
    commands = re.findall(r"`(arbitrage keys --url [^`]*)`", (DOCS / "security.md").read_text())
    assert commands
    for command in commands:
        args = _parser().parse_args(command.split()[1:])
        assert args.url and args.keys_command


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "--url", "http://127.0.0.1:8080", "create", "--name", "nb"],
        ["keys", "create", "--name", "nb", "--url", "http://127.0.0.1:8080"],
        ["keys", "--url", "http://127.0.0.1:1", "create", "--name", "nb", "--url", "http://127.0.0.1:8080"],
    ],
)
def test_keys_take_url_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    assert (args.url, args.keys_command, args.name) == ("http://127.0.0.1:8080", "create", "nb")


def test_keys_without_url_work_on_the_data_dir() -> None:
    args = _parser().parse_args(["keys", "list", "--data-dir", "/tmp/x"])
    assert (args.url, args.data_dir) == (None, "/tmp/x")


def test_help_and_serve_parse_without_importing_the_commands_that_did_not_run() -> None:
    """`serve` execs Granian and `--help` prints: neither should wait for export's or ingest's imports."""
    probe = (
        "import sys, contextlib, io\n"
        "from arbitrage.cli import _parser\n"
        "_parser().parse_args(['serve', '--port', '1'])\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    _parser().parse_args(['--help'])\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('arbitrage.'))))\n"
        "_parser().parse_args(['export', 'csv', '--out', 'x'])\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('arbitrage.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    before, after = (set(line.split()) for line in out.splitlines())
    assert not before & {"arbitrage.export", "arbitrage.ingest", "arbitrage.security", "arbitrage.storage"}
    assert "arbitrage.export" in after


def test_a_deferred_command_gets_its_arguments_when_it_runs() -> None:
    args = _parser().parse_args(["export", "csv", "--out", "/tmp/x", "--partition-by", "date"])
    assert (args.format, args.out, args.partition_by) == ("csv", "/tmp/x", ["date"])
    assert args.handler.__module__ == "arbitrage.export._cli"


@pytest.mark.parametrize(
    ("field", "shown"),
    [
        ("start_date", "--start: not a date"),
        ("dexes[1]", "--dexes (item 2): not a date"),
        ("min_profit_sol", "--min-profit: not a date"),
        ("split", "split: not a date"),  # its flag's own parser words its errors
    ],
)
def test_an_export_request_error_names_the_flag_the_user_typed(field: str, shown: str) -> None:
    from arbitrage.errors import ValidationError
    from arbitrage.export._cli import _as_flag

    assert _as_flag(ValidationError(field, "not a date")) == shown
