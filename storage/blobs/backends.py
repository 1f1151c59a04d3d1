"""Object backends for the blob store: memory (tests), fs (the embedded default) and s3 (any
S3-compatible object store). Third parties add more through the entry-point group
`carechain.blobstores`: a callable `(config: BlobSection, home: Path) -> ObjectStore`."""

from __future__ import annotations

import asyncio
import os
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from aiobotocore.session import get_session

from carechain.config.node import BlobSection
from carechain.consensus.errors import InvalidInput
from carechain.storage.blobs.store import BlobStore, ObjectStore

ENTRY_POINT_GROUP = "carechain.blobstores"


class BlobBackendError(InvalidInput):
    code = "blob_backend"


class MemoryObjects:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put_object(self, key: str, data: bytes) -> None:
        self.objects[key] = bytes(data)

    async def get_object(self, key: str) -> bytes | None:
        return self.objects.get(key)

    async def has_object(self, key: str) -> bool:
        return key in self.objects

    async def delete_object(self, key: str) -> None:
        self.objects.pop(key, None)

    async def close(self) -> None:
        return None


class FsObjects:
    """Files under `root/<namespace>/<fan-out>/<name>`, written to a temp file, fsynced and
    renamed into place, so a crash leaves a whole object or none."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        namespace, _, name = key.partition("/")
        if not name or "/" in name or name.startswith(".") or not namespace.isalnum():
            raise BlobBackendError(f"{key!r} is not an object key")
        return self.root / namespace / name[-2:] / name

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def put_object(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    async def get_object(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    async def has_object(self, key: str) -> bool:
        return self._path(key).exists()

    async def delete_object(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    async def close(self) -> None:
        return None


class S3Objects:
    """Objects in an S3-compatible bucket (aiobotocore), under an optional key prefix."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        *,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        prefix: str = "",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._context = get_session().create_client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
        )
        self._client: Any = None

    async def _s3(self) -> Any:
        if self._client is None:
            self._client = await self._context.__aenter__()
        return self._client

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def put_object(self, key: str, data: bytes) -> None:
        await (await self._s3()).put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    async def get_object(self, key: str) -> bytes | None:
        client = await self._s3()
        try:
            response = await client.get_object(Bucket=self.bucket, Key=self._key(key))
        except client.exceptions.NoSuchKey:
            return None
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def has_object(self, key: str) -> bool:
        client = await self._s3()
        try:
            await client.head_object(Bucket=self.bucket, Key=self._key(key))
        except client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    async def delete_object(self, key: str) -> None:
        await (await self._s3()).delete_object(Bucket=self.bucket, Key=self._key(key))

    async def close(self) -> None:
        if self._client is not None:
            await self._context.__aexit__(None, None, None)
            self._client = None


class BackendFactory(Protocol):
    def __call__(self, config: BlobSection, home: Path) -> ObjectStore: ...


def memory_backend(config: BlobSection, home: Path) -> ObjectStore:
    return MemoryObjects()


def fs_backend(config: BlobSection, home: Path) -> ObjectStore:
    return FsObjects(home / config.path)


def s3_backend(config: BlobSection, home: Path) -> ObjectStore:
    access = os.environ.get(config.s3_access_key_env)
    secret = os.environ.get(config.s3_secret_key_env)
    if not access or not secret:
        raise BlobBackendError(
            "the s3 blob backend needs credentials",
            hint=f"set {config.s3_access_key_env} and {config.s3_secret_key_env}",
        )
    return S3Objects(
        config.s3_endpoint,
        config.s3_bucket,
        access_key=access,
        secret_key=secret,
        region=config.s3_region,
    )


def installed_backends() -> frozenset[str]:
    """The blob backends this installation offers (`blobs.backend` may name one of them)."""
    return frozenset(e.name for e in metadata.entry_points(group=ENTRY_POINT_GROUP))


def open_blob_store(config: BlobSection, home: Path) -> BlobStore:
    """The blob store a node's config names, from the `carechain.blobstores` entry points."""
    found = {e.name: e for e in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if config.backend not in found:
        raise BlobBackendError(
            f"no blob backend {config.backend!r}",
            hint=f"installed backends: {', '.join(sorted(found)) or 'none'}",
        )
    factory: BackendFactory = found[config.backend].load()
    return BlobStore(factory(config, home))
