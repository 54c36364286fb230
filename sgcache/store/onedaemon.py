"""One daemon per SQLite file.

SQLite is the embedded, single-process store: a second `twistd sgcache` on
the same file would run a second poller and scanner against the one event
cursor. The daemon holds an exclusive `flock` on ``<file>.lock`` (with its
pid in it) from start to stop; a second one is refused with one line. The
kernel drops the lock when the process dies (kill -9 included), so a crash
never leaves the file locked. Admin commands (``sgcache status``, ...) do
not take it: they read the store beside the daemon, as before.

A separate lock file, not the database: SQLite's own locks are POSIX
``fcntl`` locks, which a process loses when it closes any descriptor of
the file; this module never opens the database file itself.
"""

from __future__ import annotations

import fcntl
import os


class AlreadyServed(Exception):
    """Another daemon holds the file (its message is the one line)."""


class DaemonLock:
    """The lock of one SQLite store file, held until `release`."""

    def __init__(self, db_path: str):
        self.path = os.path.abspath(db_path) + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `AlreadyServed` naming the holder's pid;
        OSError when the lock file cannot be made."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyServed(
                f"another sgcache daemon (pid {holder}) serves this SQLite file; SQLite is one process only "
                f"(to run several, use PostgreSQL)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)  # the lock goes with the descriptor
