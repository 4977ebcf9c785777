"""The `dante_files` object store, read and written the way this package needs.

Writing uses nats-py's `ObjectStore.put`, streaming from a local file, with chunks of
`CHUNK_BYTES`. Reading does not use `ObjectStore.get`, which reads a whole object into memory
(or a file) on every call: a download is a series of requests that may each land on another
instance of the command service, so each request reads only the chunk messages it returns.
Objects are stored as the object-store format lays out (ADR-20): the description of an object
on `$O.<bucket>.M.<base64url(name)>`, its bytes in order on `$O.<bucket>.C.<nuid>`, each
chunk `max_chunk_size` long except the last. Chunk `k` is found with batched direct gets:
each message says how many of the object's chunks follow it (`Nats-Num-Pending`), which
gives its index; a guess that fell short (the chunks of two objects written at once
interleave in the stream) is corrected from there.
"""

from __future__ import annotations

import base64
import io
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgspec
from nats.js.api import ObjectMeta, ObjectMetaOptions

from dante.events.direct import DirectReader, StoredMessage
from dante.events.subjects import FILES_BUCKET
from dante.schemas.commands import CHUNK_BYTES

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js.client import JetStreamContext
    from nats.js.object_store import ObjectStore

OBJECT_STREAM: Final = f"OBJ_{FILES_BUCKET}"
#: nats-py's chunk size for objects put without one.
_DEFAULT_CHUNK: Final = 128 * 1024
_DIGEST_PREFIX: Final = "SHA-256="


class ObjectStoreError(Exception):
    """An object is not laid out as the object-store format says."""


class _Options(msgspec.Struct):
    max_chunk_size: int | None = None


class _Meta(msgspec.Struct):
    name: str
    nuid: str = ""
    size: int = 0
    chunks: int = 0
    digest: str = ""
    deleted: bool = False
    options: _Options | None = None


_meta: Final = msgspec.json.Decoder(_Meta)


@dataclass(frozen=True, slots=True)
class StoredObject:
    name: str
    nuid: str
    size: int
    chunks: int
    chunk_size: int
    sha256: str


def sha256_hex(digest: str) -> str:
    """The object store's `SHA-256=<base64url>` digest as lower-case hex."""
    encoded = digest.removeprefix(_DIGEST_PREFIX).removeprefix(_DIGEST_PREFIX.lower())
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()


class Objects:
    """Puts files into `dante_files` and reads ranges of them back."""

    def __init__(self, nc: NATS, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._reader = DirectReader(nc, OBJECT_STREAM, timeout=timeout)
        self._store: ObjectStore | None = None
        #: The stream sequence of each recently read object's first chunk, by nuid.
        self._first: OrderedDict[str, int] = OrderedDict()

    async def info(self, name: str) -> StoredObject | None:
        """The stored object called `name`, or None when there is none (or it was deleted)."""
        encoded = base64.urlsafe_b64encode(name.encode()).decode()
        message = await self._reader.last(f"$O.{FILES_BUCKET}.M.{encoded}")
        if message is None:
            return None
        meta = _meta.decode(message.data)
        if meta.deleted:
            return None
        chunk_size = (meta.options.max_chunk_size if meta.options else None) or _DEFAULT_CHUNK
        return StoredObject(
            name=meta.name,
            nuid=meta.nuid,
            size=meta.size,
            chunks=meta.chunks,
            chunk_size=chunk_size,
            sha256=sha256_hex(meta.digest) if meta.digest else "",
        )

    async def put(self, name: str, source: io.BufferedIOBase, description: str) -> None:
        """Store the contents of `source` (a local file, read from where it stands) as `name`."""
        if self._store is None:
            self._store = await self._js.object_store(FILES_BUCKET)
        meta = ObjectMeta(
            name=name,
            description=description,
            options=ObjectMetaOptions(max_chunk_size=CHUNK_BYTES),
        )
        await self._store.put(name, source, meta=meta)

    async def free_bytes(self) -> int | None:
        """Room left in the bucket under its limit; None where it has none."""
        info = await self._js.stream_info(OBJECT_STREAM)
        limit = info.config.max_bytes
        if limit is None or limit < 0:
            return None
        return max(0, limit - info.state.bytes)

    async def read(self, obj: StoredObject, offset: int, length: int) -> bytes:
        """`length` bytes of `obj` from `offset` (fewer at its end)."""
        length = min(length, obj.size - offset)
        if length <= 0:
            return b""
        size = obj.chunk_size
        first, last = offset // size, (offset + length - 1) // size
        messages = await self._chunks(obj, first, last - first + 1)
        for index, message in enumerate(messages, start=first):
            if index < obj.chunks - 1 and len(message.data) != size:
                raise ObjectStoreError(f"chunk {index} of {obj.name} is not {size} bytes long")
        data = b"".join(message.data for message in messages)
        start = offset - first * size
        return data[start : start + length]

    async def _chunks(self, obj: StoredObject, index: int, count: int) -> list[StoredMessage]:
        """Chunks `index` to `index + count - 1` of `obj`, in order."""
        subject = f"$O.{FILES_BUCKET}.C.{obj.nuid}"
        base = self._first.get(obj.nuid)
        if base is None:
            found = [m async for m in self._reader.messages(subject, 1, limit=1)]
            if not found:
                raise ObjectStoreError(f"the chunks of {obj.name} are missing")
            base = found[0].seq
            self._first[obj.nuid] = base
            if len(self._first) > 1024:
                self._first.popitem(last=False)
        self._first.move_to_end(obj.nuid)
        guess = base + index
        # The chunk at `index` lies at or after `base + index`; each miss moves forward.
        for _ in range(obj.chunks + 1):
            found = [m async for m in self._reader.messages(subject, guess, limit=count)]
            if not found:
                break
            at = obj.chunks - 1 - found[0].pending
            if at == index:
                if len(found) < count:
                    break
                return found
            if at > index:
                break
            guess = found[0].seq + (index - at)
        raise ObjectStoreError(f"chunk {index} of {obj.name} could not be found")
