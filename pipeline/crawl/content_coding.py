"""Undoing a response's ``Content-Encoding`` in bounded steps.

httpx inflates each network chunk in one call, so a body stacked as ``gzip, gzip``
(1.8 KB on the wire) becomes 1 GiB in memory before any size cap can look at it. Here
every stage inflates at most :data:`PIECE_BYTES` per call and hands the piece to the
next stage lazily, so the caller, counting decoded bytes against its cap, stops the
whole chain as soon as the cap is passed: memory stays at a few pieces per stage
whatever the ratio.

Only the codings the fetcher advertises (:data:`ACCEPT_ENCODING`) are decoded, at most
:data:`MAX_CODINGS` of them stacked; anything else is refused with a reason.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import httpx

ACCEPT_ENCODING = "gzip, deflate"
# More layers than this serve no purpose but to multiply the inflation ratio.
MAX_CODINGS = 2
PIECE_BYTES = 64 * 1024
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class ContentCodingError(Exception):
    """The body cannot be decoded; ``reason`` is ``bad_encoding`` or ``too_many_encodings``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def read_capped(response: httpx.Response, max_bytes: int, truncate: bool) -> bytes | None:
    """The decoded body of a streamed ``response``, or None as soon as the bytes received
    or the bytes decoded exceed ``max_bytes``; with ``truncate``, the first ``max_bytes``
    decoded instead. Raises :class:`ContentCodingError`."""
    decoder = BodyDecoder(response.headers.get_list("content-encoding", split_commas=True))
    pieces: list[bytes] = []
    size = 0
    async for raw in response.aiter_raw():
        for piece in decoder.decode(raw):
            pieces.append(piece)
            size += len(piece)
            if size > max_bytes:
                break
        if size > max_bytes or response.num_bytes_downloaded > max_bytes:
            if not truncate:
                return None
            break
    return b"".join(pieces)[:max_bytes]


class BodyDecoder:
    """Decodes a body sent with the given ``Content-Encoding`` values (in the order the
    server applied them), one raw chunk at a time."""

    def __init__(self, codings: list[str]) -> None:
        applied = [coding.strip().lower() for coding in codings]
        applied = [coding for coding in applied if coding and coding != "identity"]
        if len(applied) > MAX_CODINGS:
            raise ContentCodingError("too_many_encodings")
        if any(coding not in _WBITS for coding in applied):
            raise ContentCodingError("bad_encoding")
        # The last coding applied is the first to undo.
        self._stages = [_Inflater(coding) for coding in reversed(applied)]

    def decode(self, raw: bytes) -> Iterator[bytes]:
        """The decoded pieces of ``raw``, produced as they are consumed."""
        return self._through(raw, 0)

    def _through(self, data: bytes, stage: int) -> Iterator[bytes]:
        if stage == len(self._stages):
            if data:
                yield data
            return
        for piece in self._stages[stage].feed(data):
            yield from self._through(piece, stage + 1)


class _Inflater:
    """One zlib stage. HTTP ``deflate`` should be zlib-wrapped, but some servers send raw
    deflate: that is tried when the first bytes are not a zlib stream."""

    def __init__(self, coding: str) -> None:
        self._inflater = zlib.decompressobj(_WBITS[coding])
        self._may_be_raw_deflate = coding == "deflate"  # until the first bytes have decoded

    def feed(self, data: bytes) -> Iterator[bytes]:
        pending = data
        while not self._inflater.eof:
            piece = self._decompress(pending)
            pending = self._inflater.unconsumed_tail
            if piece:
                yield piece
            # A full piece may leave output inside zlib even when all input is used.
            if not pending and len(piece) < PIECE_BYTES:
                return

    def _decompress(self, data: bytes) -> bytes:
        try:
            piece = self._inflater.decompress(data, PIECE_BYTES)
        except zlib.error:
            if not self._may_be_raw_deflate:
                raise ContentCodingError("bad_encoding") from None
            self._may_be_raw_deflate = False
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._decompress(data)
        self._may_be_raw_deflate = False
        return piece
