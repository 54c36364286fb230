"""Gzip for answers the daemon makes itself (local reads, kept answers,
faults, `info`), for clients that send ``Accept-Encoding: gzip``, from a
size up (``--gzip-min-kb``; 0: never). Answers passed through from the site
are not touched: they go to the client as the site sent them.

A kept answer is the same bytes object each time it is reused, so its
compressed form is kept too (`Compressor`: a small LRU, bounded by bytes).
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from typing import Any

#: compression level: fast (level 1 is ~5x smaller than raw JSON already)
LEVEL = 1
#: bytes of compressed answers kept for reuse
MEMO_BYTES = 16 * 2**20


def accepts_gzip(header: bytes | None) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip (``q=0`` refuses)."""
    if not header:
        return False
    for item in header.lower().split(b","):
        name, _, params = item.strip().partition(b";")
        if name.strip() in (b"gzip", b"x-gzip", b"*"):
            q = params.strip()
            if q.startswith(b"q="):
                try:
                    if float(q[2:]) <= 0:
                        continue
                except ValueError:
                    continue
            return True
    return False


def gzip_bytes(body: bytes) -> bytes:
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(body) + packer.flush()


class Compressor:
    """Compresses answers from `min_bytes` up; remembers the last ones."""

    def __init__(self, min_bytes: int | None = 16 * 1024, memo_bytes: int = MEMO_BYTES):
        self.min_bytes = min_bytes if min_bytes and min_bytes > 0 else None
        self.memo_bytes = memo_bytes
        self._memo: OrderedDict[bytes, bytes] = OrderedDict()
        self._kept = 0
        #: answers sent gzipped, their bytes before and after
        self.count = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def wants(self, request: Any, body: bytes) -> bool:
        return (self.min_bytes is not None and len(body) >= self.min_bytes
                and accepts_gzip(request.getHeader(b"accept-encoding")))

    def compress(self, body: bytes) -> bytes:
        packed = self._memo.get(body)
        if packed is not None:
            self._memo.move_to_end(body)
        else:
            packed = gzip_bytes(body)
            cost = len(body) + len(packed)
            if cost <= self.memo_bytes // 4:
                self._memo[body] = packed
                self._kept += cost
                while self._kept > self.memo_bytes:
                    old, old_packed = self._memo.popitem(last=False)
                    self._kept -= len(old) + len(old_packed)
        self.count += 1
        self.bytes_in += len(body)
        self.bytes_out += len(packed)
        return packed

    def answer(self, request: Any, body: bytes) -> bytes:
        """`body` as the client gets it: gzipped (with its headers) when it
        asked and the answer is large enough. ``Vary`` says so either way."""
        if self.min_bytes is None:
            return body
        request.setHeader(b"vary", b"Accept-Encoding")
        if not self.wants(request, body):
            return body
        request.setHeader(b"content-encoding", b"gzip")
        return self.compress(body)

    def status(self) -> dict[str, Any]:
        return {"min_bytes": self.min_bytes, "answers": self.count,
                "bytes_before": self.bytes_in, "bytes_after": self.bytes_out}
