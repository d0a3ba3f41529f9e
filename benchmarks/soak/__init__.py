"""The soak: a garden of simulated nodes through the whole real pipeline, for half an hour, with faults.

Run on demand, from the repository root (never by the test suite)::

    .venv/bin/python -m benchmarks.soak               # 50 nodes at 10x, 30 minutes
    .venv/bin/python -m benchmarks.soak --quick       # 3 minutes, faults shortened: checks the harness

Simulated nodes on pty pairs (:mod:`benchmarks.soak.garden_sim`) -> ``garden
bridge run``, connected through a cuttable TCP proxy
(``tests.faults.tools.LinkProxy``) -> Mosquitto with persistence and the
production queue settings -> ``garden hub run`` -> InfluxDB 1.x. While it
runs, faults are injected one at a time at seeded random times
(:mod:`benchmarks.soak.schedule`): InfluxDB SIGKILLed for a minute,
Mosquitto restarted (SIGTERM and SIGKILL in turn), the bridge's link to the
broker cut for 90 s, serial ports that vanish and come back under a new
name. Every 10 s it samples the bridge's and the hub's RSS, file
descriptors and threads (:mod:`benchmarks.soak.observe`). At the end it
compares the simulator's ledger with the points in InfluxDB
(:mod:`benchmarks.soak.report`) and exits non-zero if anything that must
hold does not. benchmarks/README.md, "The soak", says what each figure means.
"""
