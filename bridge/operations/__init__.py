"""Operating a running bridge: metrics, health and readiness, and the HTTP endpoint serving them.

Nothing here is on a message's path: counters are plain integers the pipeline bumps, and
they are turned into Prometheus metrics only when scraped.
"""
