"""twistd plugin: `twistd sgcache` runs the caching proxy."""

from twisted.application.service import ServiceMaker

sgcache = ServiceMaker(
    "sgcache",
    "sgcache.tap",
    "A site-local caching proxy for the Shotgun API.",
    "sgcache",
)
