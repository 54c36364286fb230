"""Where the real-site schema fixture the tests use lives:
``$SGCACHE_SCHEMA_FIXTURE``, else ``tests/fixtures/shotgun-schema`` in this
checkout (a copy of ``shared/fixtures/shotgun-schema``, so a clone of the
repository alone passes its tests)."""

from __future__ import annotations

import os

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fixture_schema_path() -> str:
    configured = os.environ.get("SGCACHE_SCHEMA_FIXTURE")
    if configured:
        return configured
    return os.path.join(_ROOT, "tests", "fixtures", "shotgun-schema")


FIXTURE_SCHEMA = fixture_schema_path()
