"""How long until the service answers: `arbitrage serve` to its first `/health` answer.

Measured from spawning the command to the first answer (what `make run`, a supervisor's
restart and every end-to-end test wait for), on a fresh data dir (the migrations run) and
on the same data dir again (they are already applied), plus `arbitrage --help`. Medians of
`--repeats` runs.

    .venv/bin/python benchmarks/startup.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine, print_table
from tests.e2e.server import ARBITRAGE, ServerProcess


def seconds_to_health(data_dir: Path) -> float:
    started = time.monotonic()
    server = ServerProcess(data_dir).start(timeout=120)
    elapsed = time.monotonic() - started
    server.stop()
    return elapsed


def seconds_for_help() -> float:
    started = time.monotonic()
    subprocess.run([str(ARBITRAGE), "--help"], check=True, capture_output=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    fresh, again, help_ = [], [], []
    with tempfile.TemporaryDirectory(prefix="arb-startup-") as tmp:
        for run in range(args.repeats):
            data_dir = Path(tmp) / f"run{run}" / "data"
            fresh.append(seconds_to_health(data_dir))
            again.append(seconds_to_health(data_dir))
            help_.append(seconds_for_help())

    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s (runs: {', '.join(f'{v:.2f}' for v in values)})"

    print_table(
        f"startup, median of {args.repeats} ({machine()})",
        [
            ("serve → /health, fresh data dir", median(fresh)),
            ("serve → /health, existing data dir", median(again)),
            ("arbitrage --help", median(help_)),
        ],
    )


if __name__ == "__main__":
    main()
