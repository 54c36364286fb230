"""What tests and benchmarks stand on, shipped with the package so a
deployment can run its own acceptance checks: a Shotgun emulator served over
HTTP (``emulator``, ``engine``, ``filters``, ``eventlog``, ``server``,
``tap``), the daemon run in-process in front of it (``daemon``,
``harness``), throw-away PostgreSQL databases (``pg``), the schema fixture
(``fixtures``), raw HTTP for malformed requests (``rawhttp``) and a store
dumper for convergence checks (``syncdump``).

The emulator is an independent implementation of Shotgun's semantics: it
never imports ``sgcache.read``, so the differential tests compare two
implementations rather than one with itself (``tests/test_layers.py``).
"""
