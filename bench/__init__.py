"""The benchmark: throughput, latency and memory of the service, beside a ceiling.

``python -m bench.run`` (``make bench``) is the entry point; `bench.run`
says what it measures and how. Modules: `bench.workload` generates and
produces the events, `bench.ceiling` is the decode-only consumer,
`bench.child` measures one subprocess, `bench.runs` the throughput runs,
`bench.live` the latency runs, `bench.report` the table and the JSON.
"""
