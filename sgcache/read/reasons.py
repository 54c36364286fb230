"""Why a read (or a summarize) passes through to the site: the one fixed
table of reasons, each in a category, and `PassThrough`, the exception that
carries one.

What is counted and shown (``info`` -> ``sgcache`` -> ``passthrough_reasons``,
the metrics) is only ever a reason from `REASONS`: a fixed phrase, never a
client's text. The detail of one pass-through (a type or field name, a
relation) goes to the debug log only. A phrase that is not in the table
counts as ``other`` (a test keeps the table complete).
"""

from __future__ import annotations

#: Categories, for coarse counting (the metrics' label).
NOT_CACHED = "not cached"
NOT_READY = "not ready"
UNSUPPORTED = "unsupported"
UNUSUAL = "unusual request"
CREDENTIALS = "credentials"
LIMITS = "limits"
BUDGET = "read budget"
SHADOW = "shadow check"
ERROR = "internal error"
OTHER = "other"

_PURPOSES = ("return", "filter", "sort", "summary", "grouping")

#: reason phrase -> category
REASONS: dict[str, str] = {
    # the store does not hold what the read touches
    "type not cached": NOT_CACHED,
    "linked type not cached": NOT_CACHED,
    "Project.archived not cached": NOT_CACHED,
    "include_archived_projects false without a cached project field": NOT_CACHED,
    "link to a type whose names are not cached": NOT_CACHED,
    "links to uncached types": NOT_CACHED,
    "filter on an uncached data type": NOT_CACHED,
    **{f"{p} field not cached": NOT_CACHED for p in _PURPOSES},
    **{f"{p} field of an uncached data type": NOT_CACHED for p in _PURPOSES},
    # the store holds it, not yet completely
    "schema changed during the read": NOT_READY,
    "type not loaded yet": NOT_READY,
    "linked type not loaded yet": NOT_READY,
    "rows not fully loaded yet": NOT_READY,
    "link target not in the store": NOT_READY,
    **{f"{p} field not ready": NOT_READY for p in _PURPOSES},
    # answerable by the site, not exactly by the store
    "deep return field through a multi-entity field": UNSUPPORTED,
    "additional_filter_presets": UNSUPPORTED,
    "link names not comparable locally": UNSUPPORTED,
    "link names not sortable locally": UNSUPPORTED,
    "text value with a Greek sigma on postgresql": UNSUPPORTED,
    "text value with a NUL character on postgresql": UNSUPPORTED,
    "calendar period edge near a time zone change": UNSUPPORTED,
    "unsupported relation": UNSUPPORTED,
    # Shotgun's rule is not known (shared/PROTOCOL.md, "Read corners")
    "null through a multi-entity link": UNSUPPORTED,
    # summarize (sgcache.read.summarize): what the emulator's engine does
    # not model, or the site's answer is not known exactly
    "summary type not answered locally": UNSUPPORTED,
    "grouping type not answered locally": UNSUPPORTED,
    "grouping by a field the cache does not group": UNSUPPORTED,
    "summary of a field the cache does not summarize": UNSUPPORTED,
    "sum or average of a float field": UNSUPPORTED,
    # what the site would judge (often with a fault of its own)
    "read arguments are not a mapping": UNUSUAL,
    "unknown read argument": UNUSUAL,
    "filter the site refuses": UNUSUAL,
    "unusual return_only": UNUSUAL,
    "unusual return_fields": UNUSUAL,
    "unusual return field": UNUSUAL,
    "unusual filters": UNUSUAL,
    "unusual filter condition": UNUSUAL,
    "unusual filter group": UNUSUAL,
    "unusual logical operator": UNUSUAL,
    "unusual sorts": UNUSUAL,
    "unusual paging": UNUSUAL,
    "relation not valid for the field": UNUSUAL,
    "filter value of the wrong type": UNUSUAL,
    "wrong number of filter values": UNUSUAL,
    "bad relative date arguments": UNUSUAL,
    "relative date out of range": UNUSUAL,
    "text value not valid Unicode": UNUSUAL,
    "number out of the store's range": UNUSUAL,
    "summarize arguments are not a mapping": UNUSUAL,
    "unknown summarize argument": UNUSUAL,
    "unusual summaries": UNUSUAL,
    "unusual grouping": UNUSUAL,
    "summary type not valid for the field": UNUSUAL,
    "summary or grouping through a multi-entity field": UNUSUAL,
    "unusual stored value": UNUSUAL,
    "date grouping out of range": UNUSUAL,
    **{f"unusual {p} field": UNUSUAL for p in _PURPOSES},
    **{f"{p} path through a non-link field": UNUSUAL for p in _PURPOSES},
    **{f"{p} path names a type the field does not link": UNUSUAL for p in _PURPOSES},
    # who asks
    "credentials not yet vouched for by the site": CREDENTIALS,
    "request on behalf of a user": CREDENTIALS,
    "script not served locally (policy)": CREDENTIALS,
    "user not served locally (policy)": CREDENTIALS,
    # cheap limits, checked before any work (see sgcache.read.planner.Limits)
    "too many filter conditions": LIMITS,
    "filter groups nested too deeply": LIMITS,
    "too many filter values": LIMITS,
    "too many return fields or sorts": LIMITS,
    "page beyond the store's range": LIMITS,
    "read too large to plan": LIMITS,
    "too many summaries or groupings": LIMITS,
    "too many summary groups": LIMITS,
    # the time budget of a local read (--read-budget-ms)
    "read over its time budget": BUDGET,
    "read shape over its time budget recently": BUDGET,
    # --shadow-action passthrough: a shadow check found this shape's local
    # answer different from the site's
    "read shape the site disagreed with (shadow check)": SHADOW,
    # a bug: the local read failed, the site answers instead (logged at error)
    "local read failed": ERROR,
}


class PassThrough(Exception):
    """The cache cannot answer this request exactly.

    `phrase` is one of `REASONS` (what gets counted); `reason` adds a
    bounded detail for the debug log (a type or field name, a relation,
    never a client value): ``"filter field not cached: Shot.nope"``.
    """

    def __init__(self, phrase: str, detail: str | None = None):
        full = phrase if detail is None else f"{phrase}: {detail}"
        super().__init__(full)
        self.phrase = phrase if phrase in REASONS else OTHER
        self.reason = full
        self._args = (phrase, detail)

    @property
    def category(self) -> str:
        return REASONS.get(self.phrase, OTHER)

    def again(self) -> "PassThrough":
        """A fresh copy, to raise a kept decision once more (raising one
        exception object again and again would grow its traceback)."""
        return PassThrough(*self._args)


def category(phrase: str) -> str:
    """The category of a counted phrase."""
    return REASONS.get(phrase, OTHER)
