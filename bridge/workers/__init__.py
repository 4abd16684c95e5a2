"""`nats-bridge run FILE --workers N`: one supervisor process and N bridge processes on one mapping.

One Python process moves messages on one core. Several `run` processes on the same mapping file
already share the work correctly (Kafka partitions through the consumer group and the checkpoints,
RabbitMQ shadow queues as competing consumers), so the supervisor adds no coordination of its own:
it starts N ordinary `python -m bridge run FILE` workers, passes their output through, restarts one
that dies, forwards SIGTERM/SIGINT, and serves one HTTP endpoint made of theirs.

- child.py: the worker's side of the contract (its index in every log line, its port, its parent)
- checks.py: what a mapping must not do with N >= 2 workers, and what it should know
- backoff.py: how soon a dead worker is started again
- merge.py: pure — the workers' /metrics as one text, their /healthz and /readyz as one answer
- process.py: one worker process: start, pass its output through, learn its port, wait for it
- endpoint.py: the supervisor's /healthz /readyz /status /metrics, asked of every worker
- supervisor.py: the N workers, their restarts, the signals and the exit code
"""
