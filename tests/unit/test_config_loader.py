"""The mapping-file loader: valid files load, broken ones get file:line errors with hints."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.config import BridgeConfig, FromKafka, FromRabbitMQ, RabbitMQMode, load_config, load_config_text
from bridge.errors import ConfigError, ConfigIssue

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"

MINIMAL = """\
version: 1
sources:
  rabbit:
    type: rabbitmq
    url: amqp://127.0.0.1/
services:
  orders:
    routes:
      - name: events
        source: rabbit
        from:
          exchange: orders
          bindings: ["order.#"]
        to: "orders.{rk}"
"""


def issues_of(text: str, env: dict[str, str] | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(textwrap.dedent(text), "test.yaml", env or {})
    return caught.value.issues


@pytest.mark.parametrize("path", sorted(MAPPINGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_mapping_is_valid(path: Path) -> None:
    config = load_config(path, env={})
    assert config.routes(), f"{path.name} declares no routes"


def test_minimal_file_loads_with_defaults() -> None:
    config = load_config_text(MINIMAL, "m.yaml", {})
    ((service, route),) = config.routes()
    assert service == "orders"
    assert isinstance(route.from_, FromRabbitMQ)
    assert route.from_.effective_mode is RabbitMQMode.SHADOW
    assert route.msg_id == "auto"
    assert config.nats.max_reconnect_attempts == -1


def test_misspelt_key_names_line_and_suggests_the_right_one() -> None:
    issues = issues_of(MINIMAL.replace('bindings: ["order.#"]', 'bindngs: ["order.#"]'))
    assert len(issues) >= 1
    issue = next(i for i in issues if "bindngs" in i.message)
    assert issue.line == 13
    assert issue.column == 11
    assert issue.path == "services.orders.routes[0].from.bindngs"
    assert issue.hint == "did you mean 'bindings'?"
    assert str(issue).startswith("test.yaml:13:11: services.orders.routes[0].from.bindngs: unknown key 'bindngs'")


def test_every_error_is_reported_not_just_the_first() -> None:
    broken = MINIMAL.replace("version: 1", "version: 1\nstreems: []").replace("to: ", "tto: ")
    issues = issues_of(broken)
    messages = [issue.message for issue in issues]
    assert "unknown key 'streems'" in messages
    assert "unknown key 'tto'" in messages
    assert "missing required key 'to'" in messages
    assert next(i for i in issues if i.message == "unknown key 'streems'").hint == "did you mean 'streams'?"


def test_missing_key_points_at_its_parent_mapping() -> None:
    issues = issues_of(MINIMAL.replace("        source: rabbit\n", ""))
    issue = next(i for i in issues if i.message == "missing required key 'source'")
    assert issue.path == "services.orders.routes[0].source"
    assert issue.line == 9


def test_yaml_syntax_error_names_line() -> None:
    issues = issues_of("version: 1\nsources: [\n  a: b\n")
    assert len(issues) == 1
    assert issues[0].message.startswith("YAML syntax error")
    assert issues[0].line >= 2


def test_route_naming_undefined_source_is_located() -> None:
    issues = issues_of(MINIMAL.replace("source: rabbit", "source: rabit"))
    assert [(i.line, i.path) for i in issues] == [(10, "services.orders.routes[0].source")]
    assert "source 'rabit' is not defined (known: rabbit)" in issues[0].message


def test_kafka_subscription_on_rabbitmq_source_is_rejected() -> None:
    text = MINIMAL.replace('exchange: orders\n          bindings: ["order.#"]', 'topics: ["orders"]')
    text = text.replace('to: "orders.{rk}"', 'to: "orders.{topic}"')
    issues = issues_of(text)
    assert any("is rabbitmq, but 'from' describes a kafka subscription" in i.message for i in issues)


def test_placeholder_of_the_other_source_kind_is_rejected() -> None:
    issues = issues_of(MINIMAL.replace("orders.{rk}", "orders.{partition}"))
    assert any("{partition} cannot be used in a rabbitmq route" in i.message for i in issues)


def test_unknown_placeholder_gets_a_suggestion() -> None:
    issues = issues_of(MINIMAL.replace("orders.{rk}", "orders.{rkey}"))
    assert len(issues) == 1
    assert issues[0].path == "services.orders.routes[0].to"
    assert "rkey" in issues[0].message


def test_interpolation_uses_environment_and_defaults() -> None:
    text = MINIMAL.replace("amqp://127.0.0.1/", "${AMQP_URL:-amqp://fallback/}")
    config = load_config_text(text, "m.yaml", {})
    source = config.sources["rabbit"]
    assert source.type == "rabbitmq"
    assert source.url.get_secret_value() == "amqp://fallback/"
    config = load_config_text(text, "m.yaml", {"AMQP_URL": "amqp://from-env/"})
    assert config.sources["rabbit"].url.get_secret_value() == "amqp://from-env/"  # type: ignore[union-attr]


def test_unset_variable_without_default_is_an_error_on_its_line() -> None:
    issues = issues_of(MINIMAL.replace("amqp://127.0.0.1/", "${NO_SUCH_VARIABLE_HERE}"))
    assert [(i.line, i.path) for i in issues] == [(5, "sources.rabbit.url")]
    assert "NO_SUCH_VARIABLE_HERE" in issues[0].message


def test_literal_secret_is_rejected_and_never_echoed() -> None:
    text = MINIMAL + "nats:\n  user: bridge\n  password: hunter2-secret\n"
    issues = issues_of(text)
    assert any(i.path == "nats.password" and "secret" in i.message for i in issues)
    assert all("hunter2" not in str(issue) for issue in issues)


def test_secret_reference_is_resolved_and_hidden_in_repr() -> None:
    text = MINIMAL + "nats:\n  user: bridge\n  password: ${NATS_PASSWORD}\n"
    config = load_config_text(text, "m.yaml", {"NATS_PASSWORD": "hunter2-secret"})
    assert config.nats.password is not None
    assert config.nats.password.get_secret_value() == "hunter2-secret"
    assert "hunter2" not in repr(config)
    assert "hunter2" not in config.model_dump_json()


def test_invalid_secret_value_error_does_not_show_it() -> None:
    text = MINIMAL + "nats:\n  token: ${NATS_TOKEN}\n  credentials_file: /x.creds\n"
    issues = issues_of(text, {"NATS_TOKEN": "s3cr3t-token"})
    assert any("choose one authentication method" in i.message for i in issues)
    assert all("s3cr3t" not in str(issue) for issue in issues)


def test_stream_durations_and_sizes_parse() -> None:
    text = MINIMAL + textwrap.dedent("""\
        streams:
          - name: ORDERS
            subjects: ["orders.>"]
            max_age: 7d
            duplicate_window: 1h30m
            max_bytes: 1GiB
        """)
    config = load_config_text(text, "m.yaml", {})
    stream = config.streams[0]
    assert stream.max_age == timedelta(days=7)
    assert stream.duplicate_window == timedelta(hours=1, minutes=30)
    assert stream.max_bytes == 1024**3


def test_duplicate_window_longer_than_max_age_is_rejected() -> None:
    text = MINIMAL + 'streams:\n  - {name: S, subjects: ["a.>"], max_age: 1m, duplicate_window: 2m}\n'
    issues = issues_of(text)
    assert any("duplicate_window cannot be longer than max_age" in i.message for i in issues)


@pytest.mark.parametrize(
    ("subjects", "bad"),
    [(["orders.>.x"], "orders.>.x"), (["a..b"], "a..b"), (["has space"], "has space"), ([""], "")],
)
def test_invalid_stream_subject_filters_are_rejected(subjects: list[str], bad: str) -> None:
    text = MINIMAL + f"streams:\n  - name: S\n    subjects: {subjects!r}\n"
    issues = issues_of(text)
    assert any(f"'{bad}' is not a valid NATS subject filter" in i.message for i in issues)


def test_kafka_route_needs_exactly_one_subscription() -> None:
    text = textwrap.dedent("""\
        sources:
          k: {type: kafka, bootstrap_servers: ["127.0.0.1:9092"]}
        services:
          s:
            routes:
              - {name: r, source: k, from: {topics: [a], topic_pattern: "b.*"}, to: "x.{topic}"}
        """)
    issues = issues_of(text)
    assert any("exactly one" in i.message for i in issues)


def test_kafka_route_loads() -> None:
    text = textwrap.dedent("""\
        sources:
          k: {type: kafka, bootstrap_servers: ["127.0.0.1:9092"]}
        services:
          s:
            routes:
              - {name: r, source: k, from: {topic_pattern: "orders\\\\..*"}, to: "x.{topic[1:]}"}
        """)
    config = load_config_text(text, "m.yaml", {})
    route = config.routes()[0][1]
    assert isinstance(route.from_, FromKafka)
    assert route.from_.topic_pattern == "orders\\..*"


def test_source_without_type_gets_a_clear_message() -> None:
    issues = issues_of(MINIMAL.replace("    type: rabbitmq\n", ""))
    assert any("type: rabbitmq" in i.message and i.path == "sources.rabbit" for i in issues)


def test_headers_exchange_route_requires_arguments_not_bindings() -> None:
    issues = issues_of(MINIMAL.replace("exchange: orders", "exchange: orders\n          type: headers"))
    assert any("headers exchange matches on 'arguments'" in i.message for i in issues)


def test_reserved_nats_header_cannot_be_set() -> None:
    text = MINIMAL.replace('to: "orders.{rk}"', 'to: "orders.{rk}"\n        headers: {set: {Nats-Msg-Id: x}}')
    issues = issues_of(text)
    assert any("reserved by NATS" in i.message for i in issues)


def test_schema_documents_every_field() -> None:
    schema = BridgeConfig.model_json_schema(by_alias=True)
    undocumented = [
        f"{name}.{field}"
        for name, definition in schema["$defs"].items()
        for field, spec in definition.get("properties", {}).items()
        if "description" not in spec
    ]
    assert undocumented == []
    assert "from" in schema["$defs"]["RouteConfig"]["properties"]


def test_rabbitmq_vhost_and_credentials_are_written_into_the_url() -> None:
    from pydantic import SecretStr

    from bridge.brokers.rabbitmq.client import amqp_url
    from bridge.config import RabbitMQSource

    source = RabbitMQSource(
        type="rabbitmq",
        url=SecretStr("amqp://guest:guest@rabbit:5672/"),
        vhost="orders/eu",
        username="bridge",
        password=SecretStr("p@ss:word"),
    )
    assert amqp_url(source) == "amqp://bridge:p%40ss%3Aword@rabbit:5672/orders%2Feu"
    plain = RabbitMQSource(type="rabbitmq", url=SecretStr("amqp://u:p@h/v"))
    assert amqp_url(plain) == "amqp://u:p@h/v"
