"""Read a blocking iterator from the event loop, one item at a time in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class ThreadedReader(Generic[T]):
    """Fetches `source`'s items in worker threads and runs `close` only once no fetch is running.

    A consumer that stops early (a failed writer, a cancelled export) cancels the task that
    awaits a fetch, but not the thread doing it; closing a chdb stream under that thread
    left the fetch blocked for good, and with it the thread pool and the process's shutdown.
    """

    def __init__(self, source: Iterator[T], close: Callable[[], None]) -> None:
        self._source = source
        self._close = close
        self._fetching: asyncio.Future[object] | None = None

    async def next(self) -> T | None:
        """The next item, or None at the end."""
        self._fetching = asyncio.ensure_future(asyncio.to_thread(next, self._source, _END))
        item = await asyncio.shield(self._fetching)
        self._fetching = None
        return None if item is _END else item  # type: ignore[return-value]

    async def close(self) -> None:
        if self._fetching is not None:
            with contextlib.suppress(BaseException):
                await self._fetching
            self._fetching = None
        await asyncio.to_thread(self._close)
