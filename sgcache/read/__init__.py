"""Reading from the store exactly as Shotgun would answer: the planner
(`planner`: can the store answer this read, and with what SQL), the
per-data-type filter relations (`relations`), the reader that runs a plan
and shapes Shotgun's JSON (`reader`), and the fixed reasons a read passes
through (`reasons`).

May import `sgcache.store`, `sgcache.schema`, `sgcache.config` and
`sgcache.logs`; never the web face, sync or the site.
"""
