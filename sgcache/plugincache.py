"""Regenerate Twisted's plugin cache (`dropin.cache`) for the installed
plugins, so `twistd` does not try (and fail, on a read-only install) to
write it at run time: ``python -m sgcache.plugincache`` after installing."""

from twisted.plugin import IPlugin, getPlugins


def main() -> None:
    list(getPlugins(IPlugin))


if __name__ == "__main__":
    main()
