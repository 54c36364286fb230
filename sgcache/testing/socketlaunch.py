"""Start a command with listening sockets handed over the way systemd's
socket activation hands them over, without systemd: the sockets become file
descriptors 3, 4, ..., ``LISTEN_FDS`` says how many, ``LISTEN_PID`` names
the process meant to take them, ``LISTEN_FDNAMES`` names them, and the
command replaces this process (exec keeps the pid, so ``LISTEN_PID`` is the
command's own). `twistd sgcache --listen systemd:domain=INET:index=0` then
serves on the socket (Twisted's ``systemd:`` endpoint reads those
variables).

Run it from a process that holds a listening socket and passes it down
(``subprocess.Popen(..., pass_fds=[sock.fileno()])``)::

    python -m sgcache.testing.socketlaunch FD[,FD...] [--name NAME] -- COMMAND [ARGS...]

Several processes started so on one socket all accept its connections (the
kernel gives each new connection to one of them): N serving processes on
one port, as ``contrib/sgcache.socket`` with ``contrib/sgcache@.service``
does under systemd (`tests/test_sockets.py` runs two `twistd sgcache`
daemons so).
"""

from __future__ import annotations

import fcntl
import os
import sys

#: systemd hands over its sockets from this descriptor on (sd_listen_fds(3))
FIRST_FD = 3

#: the name systemd gives the sockets of ``sgcache.socket`` when the unit
#: sets no FileDescriptorName=
DEFAULT_NAME = "sgcache.socket"

USAGE = "usage: python -m sgcache.testing.socketlaunch FD[,FD...] [--name NAME] -- COMMAND [ARGS...]"


def hand_over(fds: list[int], name: str = DEFAULT_NAME, environ: dict[str, str] | None = None) -> None:
    """Move `fds` to 3, 4, ... (inheritable) and set ``LISTEN_FDS``,
    ``LISTEN_PID`` (this process) and ``LISTEN_FDNAMES`` in `environ`
    (default: this process's environment). Call it just before exec."""
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    # out of the way first: one of them may already sit on 3, 4, ...
    spare = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, FIRST_FD + len(fds)) for fd in fds]
    for fd in fds:
        os.close(fd)
    for index, fd in enumerate(spare):
        os.dup2(fd, FIRST_FD + index, inheritable=True)
        os.close(fd)
    environ["LISTEN_FDS"] = str(len(fds))
    environ["LISTEN_PID"] = str(os.getpid())
    environ["LISTEN_FDNAMES"] = ":".join([name] * len(fds))


def main(argv: list[str]) -> None:
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        sys.exit(USAGE)
    split = argv.index("--")
    own, command = argv[:split], argv[split + 1:]
    name = DEFAULT_NAME
    if "--name" in own:
        at = own.index("--name")
        if at + 1 >= len(own):
            sys.exit(USAGE)
        name = own[at + 1]
        del own[at:at + 2]
    if len(own) != 1:
        sys.exit(USAGE)
    try:
        fds = [int(part) for part in own[0].split(",")]
    except ValueError:
        sys.exit(USAGE)
    hand_over(fds, name)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
