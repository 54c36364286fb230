"""The admin listener's status page: server-rendered HTML of a daemon's
`sgcache.web.snapshot` (placeholder; to be written)."""

from __future__ import annotations

import html
import json
from typing import Any


def render(snapshot: dict[str, Any]) -> bytes:
    body = html.escape(json.dumps(snapshot, indent=1, sort_keys=True, default=str))
    return f"<!doctype html><meta charset=utf-8><title>sgcache</title><pre>{body}</pre>".encode("utf-8")
