"""The console script's address before the commands became a package: `nats-bridge` installs made
earlier run `bridge.cli:main`. New installs use `bridge.commands:main`; this goes once none is left."""

from bridge.commands import app, main

__all__ = ["app", "main"]
