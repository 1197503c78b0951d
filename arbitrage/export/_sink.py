"""Where export files go: a directory or fsspec URL, written under temporary names first.

Every file of a job is written below `<destination>/.staging-<job id>/` (a hidden prefix
that dataset readers skip). Only when the job has written everything does `commit` move
each file to its final name and write `manifest.json` last; `abort` deletes the staging
prefix. A failed, cancelled or interrupted job therefore never leaves a final-named file;
a reader that waits for `manifest.json` never sees a partial export. An export into a place
that holds an earlier one replaces it: the earlier manifest and the files it lists go first,
so a reader never mixes the two.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import mmap
import os
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import fsspec
import msgspec
from fsspec.implementations.local import LocalFileSystem

STAGING_PREFIX = ".staging-"
MANIFEST_NAME = "manifest.json"
JOURNAL_PREFIX = ".publishing-"
"""`<destination>/.publishing-<job id>.json`: what a commit in progress publishes and retires."""
_O_DIRECT = getattr(os, "O_DIRECT", 0)
"""Linux's flag; 0 where the platform has none (macOS), and files go through the cache."""
PARALLEL_HASH_BYTES = 1 << 20
"""Writes at least this large are hashed on another thread while they are written."""
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def redact_url(url: str) -> str:
    """The URL without credentials or query string, safe to store and show."""
    return _USERINFO.sub(r"\1", url).split("?", 1)[0]


def storage_options_for(url: str, storage_options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """fsspec options for the URL's protocol (e.g. the `s3` entry) from the configured ones."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    return dict((storage_options or {}).get(protocol, {}))


class StagedFile(io.RawIOBase):
    """A write-only file under a temporary name that counts bytes and computes sha256."""

    def __init__(self, raw: io.RawIOBase | BinaryIO) -> None:
        self._raw = raw
        self._sha256 = hashlib.sha256()
        self._hasher: ThreadPoolExecutor | None = None
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if len(view) < PARALLEL_HASH_BYTES:
            self._raw.write(view)
            self._sha256.update(view)
        else:
            # Both release the GIL: hash on a second core while the kernel copies the bytes.
            # Done before returning, since the caller may reuse its buffer.
            if self._hasher is None:
                self._hasher = ThreadPoolExecutor(1, thread_name_prefix="export-sha256")
            hashed = self._hasher.submit(self._sha256.update, view)
            try:
                self._raw.write(view)
            finally:
                hashed.result()
        self.bytes_written += len(view)
        return len(view)

    def tell(self) -> int:
        return self.bytes_written

    def flush(self) -> None:
        if not self._raw.closed:
            self._raw.flush()

    def close(self) -> None:
        if not self.closed:
            super().close()
            try:
                self._raw.close()
            finally:
                if self._hasher is not None:
                    self._hasher.shutdown()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


class DirectFile(io.RawIOBase):
    """A new local file written around the page cache (O_DIRECT), through one aligned buffer.

    An export writes gigabytes that nobody reads back at once. Through the page cache the
    kernel copies every byte (a third of a CSV export's CPU) and the copies evict the
    warehouse's cached parts. Direct writes must be whole aligned blocks, so bytes gather in
    a page-aligned buffer; the tail is written padded and the file truncated to its size.
    Where the file system refuses O_DIRECT (tmpfs, some FUSE), it writes through the cache.
    """

    BLOCK_BYTES = 4096
    BUFFER_BYTES = 8 << 20

    def __init__(self, path: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self.direct = _O_DIRECT != 0
        try:
            self._fd = os.open(path, flags | _O_DIRECT, 0o644)
        except OSError as exc:
            if exc.errno != errno.EINVAL or not self.direct:
                raise
            self._fd = os.open(path, flags, 0o644)
            self.direct = False
        self._buffer = mmap.mmap(-1, self.BUFFER_BYTES)
        self._view = memoryview(self._buffer)
        self._used = 0
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        offset = 0
        while offset < len(view):
            take = min(len(view) - offset, self.BUFFER_BYTES - self._used)
            self._view[self._used : self._used + take] = view[offset : offset + take]
            self._used += take
            offset += take
            if self._used == self.BUFFER_BYTES:
                self._drain(self.BUFFER_BYTES)
        self._size += len(view)
        return len(view)

    def tell(self) -> int:
        return self._size

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._used:
                padded = -(-self._used // self.BLOCK_BYTES) * self.BLOCK_BYTES
                self._view[self._used : padded] = bytes(padded - self._used)
                self._drain(padded)
                os.ftruncate(self._fd, self._size)
        finally:
            super().close()
            os.close(self._fd)
            self._view.release()
            self._buffer.close()

    def _drain(self, length: int) -> None:
        written = 0
        while written < length:
            try:
                written += os.write(self._fd, self._view[written:length])
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self.direct:
                    raise
                # Accepted at open, refused at write (some file systems): use the page cache.
                fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~_O_DIRECT)
                self.direct = False
        self._used = 0


class Destination:
    """One job's output location: staged writes, then an all-or-nothing-looking commit."""

    def __init__(self, url: str, job_id: str, storage_options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url, **storage_options_for(url, storage_options))
        self.root = root.rstrip("/")
        self.job_id = job_id
        self.staging = f"{self.root}/{STAGING_PREFIX}{job_id}"
        self._local = isinstance(self.fs, LocalFileSystem)

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def open_staged(self, relative: str) -> StagedFile:
        path = f"{self.staging}/{relative}"
        if self._local:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            return StagedFile(DirectFile(path))
        return StagedFile(self.fs.open(path, "wb"))

    def commit(self, relatives: list[str], manifest: bytes) -> None:
        """Move every staged file to its final name, then write the manifest, then clean up.

        A journal names what the commit publishes and what it retires until the manifest is
        written: a process killed in between leaves files of two exports and no manifest, which
        the next commit into the same place (`rollback_interrupted`) deletes.
        """
        with self.open_staged(MANIFEST_NAME) as staged:
            staged.write(manifest)
        self.rollback_interrupted()
        previous = _listed_files(self._manifest())
        journal = f"{self.root}/{JOURNAL_PREFIX}{self.job_id}.json"
        self.fs.pipe_file(journal, msgspec.json.encode({"files": [*relatives, MANIFEST_NAME], "previous": previous}))
        self._retire_previous(previous, set(relatives))
        published: list[str] = []
        try:
            for relative in [*relatives, MANIFEST_NAME]:
                final = f"{self.root}/{relative}"
                if self._local:
                    self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
                self.fs.mv(f"{self.staging}/{relative}", final)
                published.append(final)
        except BaseException:
            self._unpublish(published)
            with contextlib.suppress(Exception):  # what is left of the earlier export, and the journal
                self.rollback_interrupted()
            raise
        self.fs.rm(journal)
        self.abort()

    def rollback_interrupted(self) -> None:
        """Undo the commits into this place that a killed process left half done (their journals).

        One whose manifest made it is complete. Otherwise, while the earlier export's manifest is
        still there nothing was moved yet; once it is gone, the place holds a mix of the two
        exports that no manifest describes, and the files of both go.
        """
        journals = self.fs.glob(f"{self.root}/{JOURNAL_PREFIX}*.json")
        if not journals:
            return
        described = isinstance((self._manifest() or {}).get("job_id"), str)
        for journal in journals:
            job_id = journal.rsplit("/", 1)[-1].removeprefix(JOURNAL_PREFIX).removesuffix(".json")
            try:
                entry = msgspec.json.decode(self.fs.cat_file(journal))
            except (FileNotFoundError, msgspec.DecodeError):
                entry = {}
            if not described:
                listed = _safe_relatives([*entry.get("files", ()), *entry.get("previous", ())])
                self._unpublish([f"{self.root}/{relative}" for relative in listed])
            self._remove_tree(f"{self.root}/{STAGING_PREFIX}{job_id}")
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(journal)

    def _manifest(self) -> dict[str, Any] | None:
        """The manifest this place holds, None without one (or one that is no JSON object)."""
        try:
            found = msgspec.json.decode(self.fs.cat_file(f"{self.root}/{MANIFEST_NAME}"))
        except (FileNotFoundError, msgspec.DecodeError):
            return None
        return found if isinstance(found, dict) else None

    def _unpublish(self, finals: list[str]) -> None:
        """Delete final-named files without a manifest (gone already, or never there: a file held
        its directory's name): a partial dataset without manifest misleads readers."""
        for final in finals:
            with contextlib.suppress(OSError):
                self.fs.rm(final)

    def _retire_previous(self, previous: list[str], keep: set[str]) -> None:
        """Delete an earlier export's manifest, then the files it lists (`previous`) that this one does not overwrite."""
        if not previous:
            return  # none, or not one of ours: leave it alone
        self.fs.rm(f"{self.root}/{MANIFEST_NAME}")
        for relative in previous:
            if relative not in keep and relative != MANIFEST_NAME:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(f"{self.root}/{relative}")

    def abort(self) -> None:
        """Delete everything staged; nothing final was written. Safe to call twice.

        The job's own directory goes too once empty: a directory named after a job, without a
        manifest, would read as a dataset that lost its files."""
        self._remove_tree(self.staging)
        if self._local and self.root.rsplit("/", 1)[-1] == self.job_id:
            with contextlib.suppress(OSError):  # not empty, or not there
                os.rmdir(self.root)

    def discard(self) -> None:
        """Delete the job's directory, published files too: a process that died while publishing
        left final-named files without a manifest, which would pass for a dataset. Only a
        directory named after the job: anything else may hold other exports, and only its
        staging prefix goes."""
        self._remove_tree(self.root if self.root.rsplit("/", 1)[-1] == self.job_id else self.staging)

    def _remove_tree(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache()

    def final_path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def read_chunks(self, relative: str, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """The bytes of a committed file, in chunks."""
        with self.fs.open(self.final_path(relative), "rb") as handle:
            while chunk := handle.read(chunk_bytes):
                yield chunk


def _listed_files(manifest: dict[str, Any] | None) -> list[str]:
    """The files an export's manifest lists, itself included (none without a manifest)."""
    if manifest is None:
        return []
    listed = manifest.get("files")
    paths = [entry.get("path") for entry in listed if isinstance(entry, dict)] if isinstance(listed, list) else []
    return _safe_relatives([*paths, MANIFEST_NAME])


def _safe_relatives(paths: list[Any]) -> list[str]:
    """The paths that name a file inside the destination (a manifest or journal is data read back)."""
    return [p for p in paths if isinstance(p, str) and p and not p.startswith("/") and ".." not in p.split("/")]
