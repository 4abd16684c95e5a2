"""The report `nats-bridge explain` prints."""

from __future__ import annotations

from collections.abc import Mapping

from bridge.decide import Fate
from bridge.explain.types import Explanation, LegacyRouting
from bridge.importers.topology_paths import Path


def format_explanation(explanation: Explanation) -> str:
    """The human-readable report `nats-bridge explain` prints."""
    lines = [explanation.message, ""]
    if explanation.legacy is not None:
        lines += _legacy_lines(explanation.legacy)
        lines += [line for mismatch in explanation.mismatches for line in (mismatch.message, "")]
    if not explanation.matches:
        lines.append("No route takes this message.")
    for outcome in explanation.matches:
        lines.append(f"route {outcome.route}  (source '{outcome.source}')")
        if outcome.fate == Fate.FILTERED:
            lines.append(f"  filtered: {outcome.detail}")
            lines.append("")
            continue
        if outcome.error is not None:
            lines.append(f"  cannot be mapped: {outcome.error}")
            lines.append("")
            continue
        if outcome.streams:
            stream_note = ", ".join(outcome.streams)
            if len(outcome.streams) > 1:
                stream_note += "  (more than one stream captures it: JetStream will refuse it)"
        else:
            stream_note = "none declared in this file captures it"
        lines += [
            f"  subject      {outcome.subject}",
            f"  stream       {stream_note}",
            f"  Nats-Msg-Id  {outcome.msg_id}",
            f"               strategy {outcome.msg_id_strategy}: {outcome.msg_id_reason}",
            f"  size         {outcome.size} bytes",
            "  headers",
        ]
        width = max((len(name) for name in outcome.headers), default=0)
        lines += [f"    {name.ljust(width)}  {value}" for name, value in outcome.headers.items()]
        if outcome.problem is not None:
            lines.append(f"  cannot be delivered: {outcome.detail} ({outcome.problem}; on_error: {outcome.fate})")
        lines.append("")
    if explanation.misses:
        lines.append("Routes that do not take it:")
        lines += [f"  {route}: {reason}" for route, reason in explanation.misses]
    return "\n".join(lines).rstrip() + "\n"


def _legacy_lines(legacy: LegacyRouting) -> list[str]:
    """RabbitMQ's side: each path, the legacy queues reached, and what else the export says."""
    routed = legacy.routed
    lines = [f"RabbitMQ, as {legacy.definitions} describes it (vhost '{routed.vhost}'):"]
    if routed.refused is not None:
        return [*lines, f"  {routed.refused}", ""]
    lines += [f"  {_path_text(routed.exchange, path, routed.types)}" for path in routed.paths]
    if routed.more_paths:
        lines.append(f"  ... more paths than the {len(routed.paths)} shown")
    reached = [", ".join(routed.queues)] if routed.queues else []
    if routed.possible_queues:
        reached.append(f"one of {', '.join(routed.possible_queues)} (picked by a hash)")
    lines.append(f"  legacy queues: {'; and '.join(reached) or 'none'}")
    lines += [f"  note: {note}" for note in routed.notes]
    return [*lines, ""]


def _path_text(published: str, path: Path, types: Mapping[str, str]) -> str:
    """`'a' (topic) -[eu.#]-> 'b' (topic) -[*.orders.#]-> queue 'q'`: one way the message goes."""

    def exchange(name: str) -> str:
        return f"'{name}' ({types.get(name, '?')})" if name else "the default exchange"

    def arrow(via: str) -> str:
        return f" -[{via}]-> " if via else " --> "

    text = exchange(published)
    for hop in path.hops:
        if hop.destination_kind == "exchange":
            target = exchange(hop.destination)
        elif hop.destination_kind == "route":
            target = f"bridge route {hop.destination}"
        else:
            target = f"queue '{hop.destination}'"
        text += arrow(hop.via) + target
    if path.choice is not None:
        options = ", ".join(
            f"{'bridge route' if hop.destination_kind == 'route' else hop.destination_kind} '{hop.destination}'"
            for hop in path.choice.options
        )
        text += f"{arrow(path.choice.options[0].via)}one of: {options} (by {path.choice.basis})"
    if path.stop is not None:
        text += f": {path.stop}"
    return text
