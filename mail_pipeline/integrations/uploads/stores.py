"""Upload stores: list the CSV files below a root, read one.

A file is named by its path *relative to the root* (``juniper-trail/12/vip.csv``), which
says whose it is (``services.uploads``), and carries a ``version`` that changes when the
file is replaced (the local file's size and modification time; the S3 object's ETag), so a
sensor notices a new upload under an old name too. Files whose names start with ``.`` or
``_`` (temporary files, ``_SUCCESS`` markers) and files still being written locally (changed
in the last few seconds) are not listed.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mail_pipeline.integrations.errors import NotFound, VendorUnavailable

#: A local file changed more recently than this is taken to be still being written.
SETTLE_SECONDS = 2.0
SUFFIXES = (".csv", ".txt", ".tsv")


@dataclass(frozen=True)
class UploadFile:
    #: The path below the store's root, with ``/`` separators.
    name: str
    version: str
    size: int


def _listed(name: str) -> bool:
    path = PurePosixPath(name)
    return path.suffix.lower() in SUFFIXES and not any(
        part.startswith((".", "_")) for part in path.parts
    )


class UploadStore(ABC):
    @abstractmethod
    def files(self) -> Iterator[UploadFile]: ...

    @abstractmethod
    def read(self, name: str) -> bytes:
        """The file's bytes; :class:`NotFound` when it is gone."""

    @abstractmethod
    def describe(self, name: str) -> str:
        """Where the file is, for people (a path, an ``s3://`` URL)."""


class LocalUploadFolder(UploadStore):
    def __init__(self, root: str | Path, *, clock: Any = time.time) -> None:
        self.root = Path(root)
        self.clock = clock

    def files(self) -> Iterator[UploadFile]:
        if not self.root.is_dir():
            return
        now = self.clock()
        for path in sorted(self.root.rglob("*")):
            if not path.is_file():
                continue
            name = path.relative_to(self.root).as_posix()
            stat = path.stat()
            if not _listed(name) or now - stat.st_mtime < SETTLE_SECONDS:
                continue
            yield UploadFile(name, f"{stat.st_size}-{stat.st_mtime_ns}", stat.st_size)

    def read(self, name: str) -> bytes:
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents:
            raise NotFound("uploads", f"{name!r} is not below the upload folder")
        try:
            return path.read_bytes()
        except FileNotFoundError as error:
            raise NotFound("uploads", f"{name!r} is no longer in the upload folder") from error

    def describe(self, name: str) -> str:
        return str(self.root / name)


class S3UploadPrefix(UploadStore):
    """Objects below ``s3://bucket/prefix/`` through a boto3 S3 client."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def files(self) -> Iterator[UploadFile]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    name = item["Key"][len(self.prefix) :]
                    if _listed(name):
                        yield UploadFile(name, str(item["ETag"]).strip('"'), int(item["Size"]))
        except self.client.exceptions.NoSuchBucket as error:
            raise NotFound("s3", f"bucket {self.bucket!r} does not exist") from error
        except self.client.exceptions.ClientError as error:
            raise VendorUnavailable("s3", f"listing uploads failed: {error}") from error

    def read(self, name: str) -> bytes:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
        except self.client.exceptions.NoSuchKey as error:
            raise NotFound("s3", f"{self.describe(name)} is gone") from error
        except self.client.exceptions.ClientError as error:
            raise VendorUnavailable(
                "s3", f"reading {self.describe(name)} failed: {error}"
            ) from error
        return bytes(answer["Body"].read())

    def describe(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"
