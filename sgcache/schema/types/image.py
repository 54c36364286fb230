"""The ``image`` data type: a signed, expiring URL; never cached (reads that
touch it pass through), though filters on it (``is`` / ``is_not`` None) are
valid."""

from sgcache.schema.types.base import DataType

TYPE = DataType("image", relations=frozenset(["is", "is_not"]), cacheable=False)
