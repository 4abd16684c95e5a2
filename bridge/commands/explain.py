"""`explain`: which routes take one message, and what they would make of it (offline)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from bridge.brokers.kafka.partitioner import key_partition
from bridge.cli_output import EXIT_FINDINGS, EXIT_OK, print_json
from bridge.commands.common import JsonFlag, MappingFile, load_mapping
from bridge.commands.imports import load_definitions
from bridge.explain import Definitions, explain_amqp, explain_kafka, format_explanation
from bridge.importers.topology import Topology


def _parse_headers(pairs: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            raise typer.BadParameter(f"'{pair}' is not NAME=VALUE", param_hint="--header")
        headers[name] = value
    return headers


def explain(
    file: MappingFile,
    exchange: Annotated[str | None, typer.Option(help="RabbitMQ exchange the message is published to.")] = None,
    routing_key: Annotated[str | None, typer.Option(help="RabbitMQ routing key ('' is allowed).")] = None,
    queue: Annotated[str | None, typer.Option(help="RabbitMQ queue the message sits in.")] = None,
    topic: Annotated[str | None, typer.Option(help="Kafka topic.")] = None,
    key: Annotated[str | None, typer.Option(help="Kafka record key.")] = None,
    partition: Annotated[
        int | None, typer.Option(help="Kafka partition (default 0, or the key's with --partitions).")
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            help="With --key: the topic's partition count; the partition is then the one Kafka's default "
            "partitioner gives the key, as a NATS producer publishing to a {partition} subject must compute it.",
            min=1,
        ),
    ] = None,
    offset: Annotated[int, typer.Option(help="Kafka offset.")] = 0,
    header: Annotated[list[str] | None, typer.Option(help="Message header NAME=VALUE; repeatable.")] = None,
    message_id: Annotated[str | None, typer.Option(help="AMQP message_id property.")] = None,
    body: Annotated[str, typer.Option(help="Message body (text).")] = "",
    definitions: Annotated[
        Path | None,
        typer.Option(
            help="RabbitMQ definitions export (as for `import rabbitmq`): also show where RabbitMQ routes "
            "the message (exchange-to-exchange bindings, alternate and hash exchanges) and where the mapping "
            "disagrees. With --exchange."
        ),
    ] = None,
    vhost: Annotated[
        str | None,
        typer.Option(
            help="With --definitions: the vhost the message is published in, and of export items naming none "
            "(default /)."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show which routes take a message and the subject, Nats-Msg-Id and headers they would produce.

    Works offline. Exit 0 when some route takes the message, 1 when none does.
    """
    headers = _parse_headers(header or [])
    amqp_given = exchange is not None or routing_key is not None or queue is not None
    if amqp_given == (topic is not None):
        raise typer.BadParameter("give either --exchange/--queue with --routing-key, or --topic")
    if definitions is not None and exchange is None:
        raise typer.BadParameter("--definitions routes a message published to an exchange: give --exchange")
    if vhost is not None and definitions is None:
        raise typer.BadParameter("--vhost is the vhost of --definitions: give the export too")
    if partitions is not None and (key is None or partition is not None):
        raise typer.BadParameter("--partitions computes the partition of --key: give --key, and no --partition")
    config = load_mapping(file, as_json)
    legacy = None
    if definitions is not None:
        vhost = vhost or "/"
        legacy = Definitions(Topology(load_definitions(definitions), vhost), str(definitions), vhost)
    if topic is not None:
        key_bytes = None if key is None else key.encode("utf-8")
        if partitions is not None and key_bytes is not None:
            partition = key_partition(key_bytes, partitions)
        explanation = explain_kafka(
            config,
            topic=topic,
            key=key_bytes,
            partition=partition or 0,
            offset=offset,
            headers=headers,
            body=body.encode("utf-8"),
        )
        if partitions is not None:
            note = f" (Kafka's default partitioner: murmur2 of key '{key}' over {partitions} partitions)"
            explanation = dataclasses.replace(explanation, message=explanation.message + note)
    else:
        properties = {"message_id": message_id} if message_id else {}
        explanation = explain_amqp(
            config,
            exchange=exchange,
            routing_key=routing_key or "",
            headers=headers,
            queue=queue,
            body=body.encode("utf-8"),
            properties=properties,
            definitions=legacy,
        )
    if as_json:
        print_json(explanation.as_json())
    else:
        typer.echo(format_explanation(explanation), nl=False)
    raise typer.Exit(EXIT_OK if explanation.matches else EXIT_FINDINGS)
