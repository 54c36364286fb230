"""The ``sgcache`` command: its parser and the schema commands (`cli`), the
store commands (`commands`: scan, status) and the sync commands
(`sync_commands`: log, reprocess), with what they share (`common`).

Top of the house with `sgcache.web`: may import `sgcache.read`,
`sgcache.sync`, `sgcache.store`, `sgcache.site`, `sgcache.schema`,
`sgcache.config` and `sgcache.logs`; never `sgcache.web`, the service
wiring, the demo or the emulator.
"""
