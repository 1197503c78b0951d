"""Where export files go: a directory or fsspec URL, written under temporary names first.

Every file of a job is written below `<destination>/.staging-<job id>/` (a hidden prefix
that dataset readers skip). Only when the job has written everything does `commit` move
each file to its final name and write `manifest.json` last; `abort` deletes the staging
prefix. A failed, cancelled or interrupted job therefore never leaves a final-named file;
a reader that waits for `manifest.json` never sees a partial export.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

STAGING_PREFIX = ".staging-"
MANIFEST_NAME = "manifest.json"
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

    def __init__(self, raw: BinaryIO) -> None:
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
            self._raw.close()
            if self._hasher is not None:
                self._hasher.shutdown()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


class Destination:
    """One job's output location: staged writes, then an all-or-nothing-looking commit."""

    def __init__(self, url: str, job_id: str, storage_options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url, **storage_options_for(url, storage_options))
        self.root = root.rstrip("/")
        self.staging = f"{self.root}/{STAGING_PREFIX}{job_id}"
        self._local = isinstance(self.fs, LocalFileSystem)

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def open_staged(self, relative: str) -> StagedFile:
        path = f"{self.staging}/{relative}"
        if self._local:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        return StagedFile(self.fs.open(path, "wb"))

    def commit(self, relatives: list[str], manifest: bytes) -> None:
        """Move every staged file to its final name, then write the manifest, then clean up."""
        with self.open_staged(MANIFEST_NAME) as staged:
            staged.write(manifest)
        for relative in [*relatives, MANIFEST_NAME]:
            final = f"{self.root}/{relative}"
            if self._local:
                self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            self.fs.mv(f"{self.staging}/{relative}", final)
        self.abort()

    def abort(self) -> None:
        """Delete everything staged; nothing final was written. Safe to call twice."""
        try:
            if self.fs.exists(self.staging):
                self.fs.rm(self.staging, recursive=True)
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
