"""DirectFile: an export file written around the page cache has exactly the bytes written to it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from arbitrage.export._sink import DirectFile


class _SmallBuffer(DirectFile):
    BUFFER_BYTES = 3 * DirectFile.BLOCK_BYTES


def _supports_o_direct(directory: Path) -> bool:
    try:
        fd = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    os.close(fd)
    (directory / "probe").unlink()
    return True


def _directories(tmp_path: Path) -> list[Path]:
    """tmp_path (a disk, usually) and, when present, a tmpfs that refuses O_DIRECT."""
    shm = Path("/dev/shm")
    return [tmp_path] + ([shm] if shm.is_dir() and os.access(shm, os.W_OK) else [])


@pytest.mark.parametrize(
    "sizes",
    [
        [],
        [1],
        [DirectFile.BLOCK_BYTES],
        [3 * DirectFile.BLOCK_BYTES],
        [5, 3 * DirectFile.BLOCK_BYTES - 5, 1],
        [10_000, 1, 7 * DirectFile.BLOCK_BYTES + 3, 4095],
    ],
)
def test_the_file_holds_every_byte_in_order_whatever_the_write_sizes(tmp_path: Path, sizes: list[int]):
    chunks = [bytes([(i * 37) % 251 + 1]) * size for i, size in enumerate(sizes)]
    for directory in _directories(tmp_path):
        path = directory / f"direct-{os.getpid()}-{len(sizes)}"
        try:
            out = _SmallBuffer(str(path))
            assert out.direct == _supports_o_direct(directory)
            for chunk in chunks:
                assert out.write(memoryview(chunk)) == len(chunk)
            assert out.tell() == sum(sizes)
            out.close()
            assert path.read_bytes() == b"".join(chunks)
        finally:
            path.unlink(missing_ok=True)


def test_closing_twice_is_harmless_and_an_existing_file_is_replaced(tmp_path: Path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100_000)
    out = DirectFile(str(path))
    out.write(b"abc")
    out.close()
    out.close()
    assert path.read_bytes() == b"abc"
