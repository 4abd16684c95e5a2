"""Pure routing logic: which messages a route takes, and which subject each one gets.

Nothing here does I/O, so the same code decides for the live bridge, `explain` and dry-run:

* amqp: RabbitMQ 3.10+ exchange semantics (direct, topic, fanout, headers with x-match).
* kafka: topic-list and regex subscriptions, as Kafka's Java consumer matches them.
* subjects: the token escaping scheme (documented there) and NATS subject validity.
* templates: subject and Msg-Id templates, parsed once and rendered per message.
"""

from bridge.errors import TemplateError, TemplateRenderError, TemplateSyntaxError
from bridge.routing.amqp import (
    ExchangeType,
    TopicPattern,
    XMatch,
    amqp_values_equal,
    compile_topic,
    direct_matches,
    exchange_matches,
    fanout_matches,
    headers_match,
    split_amqp_words,
    topic_matches,
    x_match_of,
)
from bridge.routing.kafka import is_internal_topic, kafka_topic_matches
from bridge.routing.subjects import (
    escape_token,
    is_valid_subject,
    is_valid_subject_filter,
    unescape_token,
    unescape_token_str,
)
from bridge.routing.template_fields import SUBJECT_FIELDS, TEXT_FIELDS
from bridge.routing.templates import (
    SubjectTemplate,
    TemplateContext,
    TextTemplate,
)

__all__ = [
    "SUBJECT_FIELDS",
    "TEXT_FIELDS",
    "ExchangeType",
    "SubjectTemplate",
    "TemplateContext",
    "TemplateError",
    "TemplateRenderError",
    "TemplateSyntaxError",
    "TextTemplate",
    "TopicPattern",
    "XMatch",
    "amqp_values_equal",
    "compile_topic",
    "direct_matches",
    "escape_token",
    "exchange_matches",
    "fanout_matches",
    "headers_match",
    "is_internal_topic",
    "is_valid_subject",
    "is_valid_subject_filter",
    "kafka_topic_matches",
    "split_amqp_words",
    "topic_matches",
    "unescape_token",
    "unescape_token_str",
    "x_match_of",
]
