"""The daemon's face to clients: the HTTP site (`httpsite`: request limits,
origin-form targets), the JSON-RPC resource and the relay (`rpc`), the
dispatch of each call (`dispatch`: local answer or passthrough), kept
answers to repeated reads (`answers`), who gets local answers
(`credentials`), read shapes over the time budget (`budget`).

Top of the house with `sgcache.admin`: may import `sgcache.read`,
`sgcache.sync`, `sgcache.store`, `sgcache.site`, `sgcache.schema`,
`sgcache.config` and `sgcache.logs`; never `sgcache.admin`, the service
wiring, the demo or the emulator.
"""
