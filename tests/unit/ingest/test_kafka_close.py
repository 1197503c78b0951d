"""Leaving the Kafka group is bounded in time: a consumer close that never returns must not hang shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from arbitrage.ingest.kafka._fetch import close_within


def test_a_close_that_returns_in_time_is_waited_for() -> None:
    closed = threading.Event()
    assert close_within(closed.set, 5.0)
    assert closed.is_set()


def test_a_close_that_never_returns_is_left_behind_in_a_daemon_thread_after_the_timeout() -> None:
    release = threading.Event()
    started = time.monotonic()
    assert not close_within(release.wait, 0.3)
    waited = time.monotonic() - started
    assert 0.3 <= waited < 3.0
    stuck = [t for t in threading.enumerate() if t.name == "kafka-consumer-close" and t.is_alive()]
    assert stuck and all(t.daemon for t in stuck)  # the interpreter does not wait for it at exit
    release.set()
    for thread in stuck:
        thread.join(5.0)


def test_an_error_raised_by_the_close_in_time_reaches_the_caller() -> None:
    def fail() -> None:
        raise RuntimeError("broker said no")

    with pytest.raises(RuntimeError, match="broker said no"):
        close_within(fail, 5.0)
