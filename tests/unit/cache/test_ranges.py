"""The range cache keeps a body until a stored row lands in its range, and never keeps a stale one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from arbitrage.cache import RangeCache

pytestmark = pytest.mark.anyio

DAY = datetime(2025, 3, 1, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)


def _end(day: datetime) -> datetime:
    return day + timedelta(days=1) - timedelta(milliseconds=1)


def _stored(*times: datetime) -> pl.DataFrame:
    return pl.DataFrame({"block_time": list(times)}, schema={"block_time": pl.Datetime("ms", "UTC")})


async def test_a_stored_row_inside_the_range_drops_the_page_and_one_outside_keeps_it() -> None:
    cache = RangeCache()
    assert cache.put("day", DAY, _end(DAY), b"page", cache.ticket())
    await cache.invalidate(_stored(NEXT_DAY + timedelta(hours=3)))
    assert cache.get("day") == b"page"
    await cache.invalidate(_stored(DAY - timedelta(days=2), DAY + timedelta(hours=23)))
    assert cache.get("day") is None


async def test_the_ends_of_the_range_are_inside_it() -> None:
    cache = RangeCache()
    cache.put("day", DAY, _end(DAY), b"page", cache.ticket())
    await cache.invalidate(_stored(_end(DAY)))
    assert cache.get("day") is None


async def test_a_body_read_before_an_overlapping_store_is_not_kept() -> None:
    cache = RangeCache()
    ticket = cache.ticket()
    await cache.invalidate(_stored(DAY + timedelta(hours=1)))
    assert not cache.put("day", DAY, _end(DAY), b"stale", ticket)
    assert cache.get("day") is None


async def test_a_body_read_before_a_store_elsewhere_is_kept() -> None:
    cache = RangeCache()
    ticket = cache.ticket()
    await cache.invalidate(_stored(NEXT_DAY + timedelta(hours=1)))
    assert cache.put("day", DAY, _end(DAY), b"page", ticket)
    assert cache.get("day") == b"page"


async def test_a_reader_older_than_the_remembered_stores_keeps_nothing() -> None:
    cache = RangeCache(history=2)
    ticket = cache.ticket()
    for hour in range(3):
        await cache.invalidate(_stored(NEXT_DAY + timedelta(hours=hour)))
    assert not cache.put("day", DAY, _end(DAY), b"page", ticket)


async def test_flush_drops_everything_and_refuses_reads_begun_before_it() -> None:
    cache = RangeCache()
    cache.put("day", DAY, _end(DAY), b"page", cache.ticket())
    ticket = cache.ticket()
    cache.flush_cache()
    assert cache.get("day") is None
    assert not cache.put("day", DAY, _end(DAY), b"page", ticket)


def test_the_least_recently_used_pages_go_first_when_over_the_byte_bound() -> None:
    cache = RangeCache(max_bytes=40)
    page = b"x" * 10
    for key in "abcde":
        cache.put(key, DAY, _end(DAY), page, cache.ticket())
    assert cache.get("a") is None
    assert cache.get("b") == page
    cache.put("f", DAY, _end(DAY), page, cache.ticket())
    assert (cache.get("b"), cache.get("c")) == (page, None)
    assert cache.size_bytes == 40


def test_a_body_above_a_quarter_of_the_bound_is_not_kept() -> None:
    cache = RangeCache(max_bytes=40)
    assert not cache.put("huge", DAY, _end(DAY), b"x" * 11, cache.ticket())
    assert len(cache) == 0
