"""Developer tooling: the emulators (moto_server, LocalStack), free ports, the pytest
fixtures of the bus, and the cutover's test harness (a live stack, traffic, the ledger
checks). Production code never imports it; the embedded stack (``runstack``), the tests,
the crash suite, the benchmarks and the CI scripts do.
"""
