"""The mapping file: its model, its loader, and the durations it is written in."""

from bridge.config.durations import Duration, format_duration, parse_duration
from bridge.config.loader import load_config, load_config_text
from bridge.config.model import BridgeConfig
from bridge.config.nats import NatsConfig
from bridge.config.routes import (
    FromKafka,
    FromRabbitMQ,
    HeaderMapping,
    MsgIdStrategy,
    OnError,
    RabbitMQMode,
    RouteConfig,
)
from bridge.config.services import ServiceConfig
from bridge.config.sources import KafkaSource, RabbitMQSource
from bridge.config.streams import StreamConfig

__all__ = [
    "BridgeConfig",
    "Duration",
    "FromKafka",
    "FromRabbitMQ",
    "HeaderMapping",
    "KafkaSource",
    "MsgIdStrategy",
    "NatsConfig",
    "OnError",
    "RabbitMQMode",
    "RabbitMQSource",
    "RouteConfig",
    "ServiceConfig",
    "StreamConfig",
    "format_duration",
    "load_config",
    "load_config_text",
    "parse_duration",
]
