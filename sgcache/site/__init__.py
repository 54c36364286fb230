"""The Shotgun site as the daemon sees it: the pooled treq client
(`client`: clients' requests forwarded, the relay, the cache's own calls),
Shotgun faults (`faults`), back-off for retries (`backoff`).

Used by both the web face and sync, so it sits below both; it may import
`sgcache.schema`, `sgcache.config` and `sgcache.logs` only.
"""
