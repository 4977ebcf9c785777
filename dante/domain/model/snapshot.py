"""The world as a snapshot: every aggregate, book and index at one position of the log, as
length-prefixed msgpack frames, and the world they restore.

A snapshot is a cache of the log's fold, nothing more: restoring one and applying the log
after its position gives the world the whole log gives. Pure: where the file lives, when one
is taken and how it is checked against the log are `dante.handlers.snapshot`'s.

Taking one is cheap where the world goes on: `Capture(world)` only copies the dictionaries
(the states and books in them are immutable, so the copies hold the world as it was); its
`frames()` can then be encoded elsewhere (a worker thread), a few thousand items a frame.

After a magic line, the frames, each a 4-byte big-endian length, the CRC-32 of its body
and a msgpack body: the `Header`, then the providers, jobs, wallets and books (in the
world's order), the indexes, and `End` with the number of frames before it. A truncated or
damaged file does not restore; the providers alone (the command service's market) can be
read from its first frames (`Reader.providers`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Final

import msgspec

from dante.domain.model.job import JobState
from dante.domain.model.payment import PaymentState
from dante.domain.model.provider import ProviderState
from dante.domain.model.wallet import WalletState
from dante.domain.model.world import AttemptBook, World
from dante.schemas import events as ev

#: The layout of the frames; a change of it (or of the states' code: the fingerprint the
#: handlers add) makes older snapshots unreadable, so they are ignored.
FORMAT: Final = 2
MAGIC: Final = b"DANTE-WORLD-SNAPSHOT\n"
#: Items per frame: each frame is encoded in one go, holding the interpreter that long.
FRAME_ITEMS: Final = 2000
_LENGTH: Final = 4
_CRC: Final = 4
#: A frame bigger than this is damage, not data (a frame holds `FRAME_ITEMS` items).
_MAX_FRAME: Final = 1 << 30


class SnapshotError(ValueError):
    """The bytes are not a whole, undamaged snapshot."""


class Header(msgspec.Struct, frozen=True, kw_only=True):
    """What the snapshot covers, and what wrote it."""

    format: int
    #: The code that folds the log (`dante.handlers.snapshot.fingerprint`).
    fingerprint: str
    #: The log: its stream, when that was made (ISO 8601, "" unknown), and the position the
    #: world had reached with the id of the event there.
    stream: str
    stream_created: str
    seq: int
    event_id: str
    taken_at: datetime
    providers: int
    jobs: int
    wallets: int
    books: int


class _Providers(msgspec.Struct, tag="providers"):
    items: list[ProviderState]


class _Jobs(msgspec.Struct, tag="jobs"):
    items: list[JobState]


class _Wallets(msgspec.Struct, tag="wallets"):
    items: list[WalletState]


class _Books(msgspec.Struct, tag="books"):
    items: list[AttemptBook]


class _Payments(msgspec.Struct, tag="payments"):
    items: list[PaymentState]


class _Indexes(msgspec.Struct, tag="indexes"):
    waiting: dict[str, int]
    completed: dict[str, int]
    lost: dict[str, int]
    placed_on: dict[str, list[str]]
    #: The rules recorded last (`SettingsChanged`) and their sequence.
    settings: ev.SettingsChanged | None = None
    settings_version: int = 0
    #: Withdrawals the settlement has yet to pay, and whose wallet each is.
    open_payouts: dict[str, str] = {}


class _End(msgspec.Struct, tag="end"):
    frames: int


_Frame = _Providers | _Jobs | _Wallets | _Books | _Payments | _Indexes | _End
_header_decoder: Final = msgspec.msgpack.Decoder(Header)
_frame_decoder: Final = msgspec.msgpack.Decoder(_Frame)


class Capture:
    """The world as it is now, to encode later while the world goes on."""

    def __init__(self, world: World) -> None:
        if world.causes:
            # The command service's world remembers causes; the handlers' does not.
            raise ValueError("a world that remembers causes is not snapshotted")
        self.position = world.position
        self.providers = list(world.providers.values())
        self.jobs = list(world.jobs.values())
        self.wallets = list(world.wallets.values())
        self.books = list(world.books.values())
        self.payments = list(world.payments.values())
        self.waiting = dict(world.waiting)
        self.completed = dict(world.completed)
        self.lost = dict(world.lost)
        self.placed_on = {k: sorted(v) for k, v in world.placed_on.items()}
        self.settings, self.settings_version = world.settings, world.settings_version
        self.open_payouts = dict(world.open_payouts)

    def frames(self, header: Header, *, items: int = FRAME_ITEMS) -> Iterator[bytes]:
        """The snapshot, frame by frame, starting with `MAGIC`."""
        encoder = msgspec.msgpack.Encoder()
        count = 0

        def frame(body: bytes) -> bytes:
            nonlocal count
            count += 1
            return encode_frame(body)

        yield MAGIC
        yield frame(encoder.encode(header))
        parts: list[
            tuple[type[_Providers | _Jobs | _Wallets | _Books | _Payments], list[object]]
        ] = [
            (_Providers, list(self.providers)),
            (_Jobs, list(self.jobs)),
            (_Wallets, list(self.wallets)),
            (_Books, list(self.books)),
            (_Payments, list(self.payments)),
        ]
        for kind, values in parts:
            for start in range(0, len(values), items):
                yield frame(encoder.encode(kind(values[start : start + items])))  # type: ignore[arg-type]
        indexes = _Indexes(
            self.waiting,
            self.completed,
            self.lost,
            self.placed_on,
            self.settings,
            self.settings_version,
            self.open_payouts,
        )
        yield frame(encoder.encode(indexes))
        yield encode_frame(encoder.encode(_End(frames=count)))

    def header(
        self, *, fingerprint: str, stream: str, stream_created: str, event_id: str, at: datetime
    ) -> Header:
        return Header(
            format=FORMAT,
            fingerprint=fingerprint,
            stream=stream,
            stream_created=stream_created,
            seq=self.position,
            event_id=event_id,
            taken_at=at,
            providers=len(self.providers),
            jobs=len(self.jobs),
            wallets=len(self.wallets),
            books=len(self.books),
        )


def encode_frame(body: bytes) -> bytes:
    return len(body).to_bytes(_LENGTH, "big") + zlib.crc32(body).to_bytes(_CRC, "big") + body


def encode(world: World, header: Header) -> bytes:
    """The whole snapshot of `world` in memory (tests; the handlers stream frames to a file)."""
    return b"".join(Capture(world).frames(header))


class Reader:
    """Reads a snapshot from `read(n)` (a file's read): the header first, then the world."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._frames = 0
        self._ahead: _Frame | None = None
        if read(len(MAGIC)) != MAGIC:
            raise SnapshotError("not a snapshot of Dante's world (no magic line)")
        try:
            self.header = _header_decoder.decode(self._frame())
        except msgspec.DecodeError as exc:
            # An older layout may not even decode: it is stale either way.
            raise SnapshotError(f"unreadable header: {exc}") from None

    def _frame(self) -> bytes:
        prefix = self._read(_LENGTH + _CRC)
        if len(prefix) < _LENGTH + _CRC:
            raise SnapshotError("truncated: it ends before its end frame")
        size = int.from_bytes(prefix[:_LENGTH], "big")
        if size > _MAX_FRAME:
            raise SnapshotError(f"damaged: a frame of {size} bytes")
        body = self._read(size)
        if len(body) < size:
            raise SnapshotError("truncated: it ends inside a frame")
        if zlib.crc32(body) != int.from_bytes(prefix[_LENGTH:], "big"):
            raise SnapshotError(f"damaged: frame {self._frames} does not match its checksum")
        self._frames += 1
        return body

    def _next(self) -> _Frame:
        if self._ahead is not None:
            frame, self._ahead = self._ahead, None
            return frame
        number = self._frames
        try:
            return _frame_decoder.decode(self._frame())
        except msgspec.DecodeError as exc:
            raise SnapshotError(f"damaged frame {number}: {exc}") from None

    def providers(self) -> list[ProviderState]:
        """The providers, read from the frames after the header (the rest is left unread)."""
        found: list[ProviderState] = []
        while isinstance(frame := self._next(), _Providers):
            found.extend(frame.items)
        self._ahead = frame
        if len(found) != self.header.providers:
            raise SnapshotError("damaged: it does not hold the providers its header says")
        return found

    def world(self) -> World:
        """The world the snapshot holds, at its header's position."""
        world = World()
        indexes: _Indexes | None = None
        while True:
            frames = self._frames
            frame = self._next()
            match frame:
                case _Providers(items):
                    world.providers.update((p.provider_id, p) for p in items)
                case _Jobs(items):
                    world.jobs.update((j.job_id, j) for j in items)
                case _Wallets(items):
                    world.wallets.update((w.wallet_id, w) for w in items)
                case _Books(items):
                    world.books.update(((b.job_id, b.attempt), b) for b in items)
                case _Payments(items):
                    world.payments.update((p.signature, p) for p in items)
                case _Indexes():
                    indexes = frame
                case _End():
                    if frame.frames != frames:
                        raise SnapshotError("damaged: frames are missing")
                    break
        if self._read(1):
            raise SnapshotError("damaged: bytes after its end frame")
        header = self.header
        counts = (len(world.providers), len(world.jobs), len(world.wallets), len(world.books))
        if indexes is None or counts != (
            header.providers,
            header.jobs,
            header.wallets,
            header.books,
        ):
            raise SnapshotError("damaged: it does not hold what its header says")
        world.waiting = indexes.waiting
        world.completed = indexes.completed
        world.lost = indexes.lost
        world.placed_on = {k: set(v) for k, v in indexes.placed_on.items()}
        for provider in world.providers.values():
            world.index_machine(provider)  # derived from the providers' states
        world.settings, world.settings_version = indexes.settings, indexes.settings_version
        world.open_payouts = indexes.open_payouts
        world.position = header.seq
        return world


def decode(data: bytes) -> tuple[Header, World]:
    """The header and world of a whole snapshot in memory."""
    offset = 0

    def read(n: int) -> bytes:
        nonlocal offset
        chunk = data[offset : offset + n]
        offset += len(chunk)
        return chunk

    reader = Reader(read)
    return reader.header, reader.world()
