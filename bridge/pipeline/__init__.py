"""(4) SETTLE: the pipeline — read -> map -> publish -> settle, one `RoutePipeline` per route.

The modules, from the bottom up (each imports only the ones above it in this list):

- `settings`: PipelineSettings, and the two stores a pipeline is handed (Checkpointer, PayloadStore)
- `stats`: RouteStats, the running totals metrics and /status read
- `entries`: LaneEntry, one message of a lane (the publisher's InFlight and the pipeline's bookkeeping)
- `reorders`: telling when JetStream stored a lane's records out of order
- `lanes`: LaneState, a lane's unsettled messages, its watermark and its publish outcomes
- `settling`: what is checkpointed and settled, and when
- `rejections`: the fate of messages that cannot go where the route says (on_error)
- `sending`: which queued messages go to the publisher now (pipelined, strict, batched)
- `intake`: each message read decided and queued on its lane, or settled at once
- `route`: RoutePipeline, which wires them and runs the loop

Importers outside use the names below (or the module that defines them).
"""

from bridge.errors import RouteStoppedError
from bridge.pipeline.route import RoutePipeline
from bridge.pipeline.settings import PipelineSettings
from bridge.pipeline.stats import RouteStats

__all__ = ["PipelineSettings", "RoutePipeline", "RouteStats", "RouteStoppedError"]
