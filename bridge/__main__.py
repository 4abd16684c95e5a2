"""`python -m bridge` runs the same CLI as the `nats-bridge` console script."""

from bridge.commands import main

main()
