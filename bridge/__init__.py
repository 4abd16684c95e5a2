"""nats-bridge: move RabbitMQ and Kafka traffic into NATS JetStream, effectively once.

Embedding it, the three things a program does with a mapping file::

    import bridge

    config = bridge.load_config("mappings/estate.yaml")          # validated, or BridgeError
    plan = bridge.compile_plan(config)                              # every route compiled once
    print(bridge.explain_kafka(plan, topic="orders", key=b"k1").as_json())
    bridge.run_bridge(config)                                       # until SIGINT/SIGTERM

`explain_*` take a config too and compile it on the way in; a program explaining many messages
compiles once.
`Bridge(config, RunSettings(...))` is the same run as a coroutine (`await Bridge(...).run()`,
`stop()` to end it) for a program with its own event loop. Everything else in the package is
private to it and may change.

The names are loaded on first use, so `import bridge` stays cheap for a program (or the CLI)
that needs only some of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Bridge",
    "BridgeConfig",
    "BridgeError",
    "Explanation",
    "Plan",
    "RunSettings",
    "__version__",
    "compile_plan",
    "explain_amqp",
    "explain_kafka",
    "load_config",
    "run_bridge",
]

_HOMES = {
    "Bridge": "bridge.runner",
    "RunSettings": "bridge.runner",
    "run_bridge": "bridge.process",
    "BridgeConfig": "bridge.config.model",
    "load_config": "bridge.config.loader",
    "BridgeError": "bridge.errors",
    "Explanation": "bridge.explain",
    "explain_amqp": "bridge.explain",
    "explain_kafka": "bridge.explain",
    "Plan": "bridge.plan",
    "compile_plan": "bridge.plan",
}

if TYPE_CHECKING:
    from bridge.config.loader import load_config
    from bridge.config.model import BridgeConfig
    from bridge.errors import BridgeError
    from bridge.explain import Explanation, explain_amqp, explain_kafka
    from bridge.plan import Plan, compile_plan
    from bridge.process import run_bridge
    from bridge.runner import Bridge, RunSettings


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'bridge' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted(__all__)
