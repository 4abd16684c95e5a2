"""nats-bridge: move RabbitMQ and Kafka traffic into NATS JetStream, effectively once."""

__version__ = "0.1.0"
