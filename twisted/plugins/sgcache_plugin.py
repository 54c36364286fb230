"""twistd plugin: `twistd sgcache` runs the caching proxy."""

from twisted.application.service import ServiceMaker

sgcache = ServiceMaker(
    "sgcache",
    "sgcache.service",
    "A site-local caching proxy for the Shotgun API.",
    "sgcache",
)
