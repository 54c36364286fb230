"""Keeping the store current from the site: the event poller (`poller`),
the scanner (`scanner`), reading entities from the site into changes
(`fetch`), the write-back of passed-through writes (`writeback`), filling
links to missing rows (`linkfill`), the fence against stale re-reads
(`freshness`) and the update log's pruner (`updatelog`).

May import `sgcache.store`, `sgcache.site`, `sgcache.schema`,
`sgcache.config` and `sgcache.logs`; never the web face or `sgcache.read`.
"""
