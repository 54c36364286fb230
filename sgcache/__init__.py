"""sgcache: a site-local caching proxy for the Shotgun API."""

__version__ = "0.1.0"
