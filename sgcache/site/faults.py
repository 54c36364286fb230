"""Shotgun-style faults: the one exception type every layer raises when a
request must be refused, and its wire form.

Shotgun answers a refused RPC with HTTP 200 and
``{"exception": true, "message": ..., "error_code": N}``. The client maps
102 to AuthenticationFault and anything else to a plain Fault. The exact
message texts of a real site are not all known; the ones used here are
listed in docs/emulator.md.
"""

from __future__ import annotations

from typing import Any

#: Authentication failed (client raises AuthenticationFault).
ERR_AUTH = 102
#: Generic API error (bad arguments, unknown type or field, CRUD failure).
ERR_API = 103
#: The cache could not reach the upstream site.
ERR_UPSTREAM = 503
#: Request could not be parsed at all.
ERR_BAD_REQUEST = 400


class Fault(Exception):
    """A refusal to be sent to the client as a Shotgun fault body."""

    def __init__(self, message: str, error_code: int = ERR_API):
        super().__init__(message)
        self.message = message
        self.error_code = error_code

    def to_wire(self) -> dict[str, Any]:
        return {"exception": True, "message": self.message, "error_code": self.error_code}


def unknown_entity_type(method: str, entity_type: Any) -> Fault:
    return Fault(
        f"API {method}() CRUD ERROR #1: Entity type {entity_type!s} does not exist "
        f"(invalid/missing string entity 'type')",
        ERR_API,
    )


def unknown_field(method: str, entity_type: str, field: str) -> Fault:
    return Fault(
        f"API {method}() CRUD ERROR #5: {entity_type}.{field} doesn't exist: "
        f"field {field!r} is not a valid field of {entity_type}",
        ERR_API,
    )


def bad_auth() -> Fault:
    return Fault("Can't authenticate script: invalid script_name or script_key", ERR_AUTH)
