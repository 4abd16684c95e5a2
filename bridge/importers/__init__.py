"""Generate mapping files from what the legacy brokers already know (`nats-bridge import`).

* rabbitmq: a definitions export (exchanges, queues, bindings) -> shadow routes and streams.
* rabbitmq/consumers: a durable consumer per legacy queue; kafka_consumers: one per legacy group.
* kafka: the cluster's topics and retention configs -> one stream and route per topic.
* render: the generated document as YAML, with comments beside what they concern.
* topology: a definitions export as the broker holds it (policies applied), read by the importer
  and by `explain --definitions`.
* topology_routing: where RabbitMQ sends one message in that topology (`explain --definitions`).
"""

from bridge.importers.kafka import TopicInfo, import_topics, read_topics, select_topics
from bridge.importers.rabbitmq import import_definitions
from bridge.importers.render import MappingDocument, render

__all__ = [
    "MappingDocument",
    "TopicInfo",
    "import_definitions",
    "import_topics",
    "read_topics",
    "render",
    "select_topics",
]
