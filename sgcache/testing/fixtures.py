"""Where the shared real-site schema fixture lives: ``$SGCACHE_SCHEMA_FIXTURE``,
else ``../shared/fixtures/shotgun-schema`` beside the checkout (as laid out
for developers and CI)."""

from __future__ import annotations

import os

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fixture_schema_path() -> str:
    configured = os.environ.get("SGCACHE_SCHEMA_FIXTURE")
    if configured:
        return configured
    return os.path.join(os.path.dirname(_ROOT), "shared", "fixtures", "shotgun-schema")


FIXTURE_SCHEMA = fixture_schema_path()
