"""Test helper: send bytes a well-behaved HTTP client never would (odd
request-targets, lying lengths, bombs) and read the answer, with a plain
blocking socket (run it in a thread: ``deferToThread(raw_request, ...)``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass
class RawResponse:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def raw_request(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 30.0) -> RawResponse | None:
    """Send `data` (a whole request, ``Connection: close`` in it) and read
    until the server closes. None when it closed without an answer."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return parse_response(b"".join(chunks))


def request_bytes(method: str, target: bytes, body: bytes = b"", headers: dict[str, str] | None = None,
                  chunked: bool = False) -> bytes:
    """A request as bytes, ``Connection: close``; a Content-Length for
    `body` unless `chunked` (or the caller set one)."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: sgcache.test", b"Connection: close"]
    given = {k.lower() for k in (headers or {})}
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}".encode("latin-1"))
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 4096]), body[i:i + 4096])
                           for i in range(0, len(body), 4096)) + b"0\r\n\r\n"
    else:
        if "content-length" not in given:
            lines.append(b"Content-Length: %d" % len(body))
        payload = body
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


def parse_response(raw: bytes) -> RawResponse | None:
    if not raw:
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = _unchunk(body)
    return RawResponse(status, headers, body)


def _unchunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        data = rest[size + 2:]
    return b"".join(out)
