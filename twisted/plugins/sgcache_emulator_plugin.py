"""twistd plugin: ``twistd -n sgcache-emulator --help``."""

from twisted.application.service import ServiceMaker

sgcache_emulator = ServiceMaker(
    "sgcache-emulator",
    "sgcache.testing.tap",
    "An in-memory Shotgun API emulator for tests",
    "sgcache-emulator",
)
