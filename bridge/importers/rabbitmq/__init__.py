"""RabbitMQ definitions export -> a shadow-mode mapping file, with notes for what does not translate.

The input is what the management UI's "Export definitions", `GET /api/definitions[/<vhost>]`
or `rabbitmqctl export_definitions` writes. Only vhosts, exchanges, queues and bindings are
read; users, password hashes, permissions, policies' secrets and parameters are never copied
(the generated sources point at `${AMQP_URL}`).

Mapping rules, chosen for a team that wants an exact shadow copy first and cut-over later:

* **Sources.** One `rabbitmq` source per vhost that has something to copy, url
  `${AMQP_URL:-amqp://127.0.0.1:5672/}` and `vhost:` set, so the file holds no credential.
* **Services.** One service per exchange that has queues bound to it (directly; a stream queue
  is read on its own, see below). The service is the unit of cut-over: everything its
  consumers' queues received from that exchange.
* **Routes.** A topic, direct or fanout exchange gets ONE shadow route bound with the union of
  the (deduplicated) binding keys of its queues. A shadow queue receives a message once however
  many of its keys match, so each message is copied once — not once per legacy queue — and the
  stream holds exactly what some legacy consumer receives. A comment lists each legacy queue with
  its keys, so NATS consumers can later be given the same filter. A headers exchange gets one
  route per distinct argument set (a route has one `arguments` table); identical sets share one.
  Such routes share the Msg-Id template `{exchange}/{auto}`, so a message two tables match is
  stored once.
* **Streams and subjects.** A stream per mapped exchange, `RMQ_<EXCHANGE>`, capturing
  `<prefix>.<exchange>` and, for topic/direct, `<prefix>.<exchange>.>`; routes publish to
  `<prefix>.<exchange>.{rk}` (topic, direct) or `<prefix>.<exchange>` (fanout, headers). The
  exchange name is one escaped token (`bridge.routing.escape_token`), so dots or wildcards in
  it cannot change the subject's shape and two exchanges never share a subject. With several
  vhosts the vhost is a token too: `<prefix>.<vhost>.<exchange>`.
* **Exchange-to-exchange bindings.** Each queue's traffic is shadowed where it enters: at the
  exchange(s) no exchange-to-exchange binding feeds (found by following every chain back). The
  entry's route is bound with what the chain selects (topic and direct keys intersected step by
  step: `eu.#` then `*.orders.#` is `eu.orders.#`); where a step cannot be written as a binding of
  the entry (a headers step after a topic entry, two patterns whose intersection takes several
  patterns, like `#.a.#` and `#.b.#`) the key so far, a superset, is used and a comment says so.
  Exchanges fed by such bindings get no service of their own.
* **Hash exchanges** (`x-consistent-hash`, `x-modulus-hash`) send each message to ONE of their
  bindings, so a queue bound to one takes a share, never a copy: they are copied at the exchange
  feeding them (together their queues receive all of it), with the hashing explained; one that
  producers publish to directly is NOT MAPPED.
* **Policies** (`policies`, `operator_policies`): per queue or exchange the matching policy of
  highest priority (pattern searched in the name, `apply-to` all / queues / exchanges /
  classic_queues / quorum_queues / streams); message-ttl, max-length and max-length-bytes take the
  smallest of queue argument, policy and operator policy; dead-letter-exchange, its routing key
  and overflow come from the policy only when the queue has no argument; alternate-exchange alike.
* **Retry and delay queues** (a TTL and a dead-letter exchange that routes the expired message on
  to a queue that is not a parking lot): the TTL is a delay, not retention: no `max_age`. The
  message comes back into its dead-letter exchange with the Msg-Id of its first copy, so that
  exchange's stream gets a `duplicate_window` of the TTL plus the default 2m (at most its
  `max_age`): a retried message is stored once, not once per trip.
* **Nothing to copy** is `NothingToCopyError` (one `error:` line and exit 2 in the CLI), never an empty mapping.
* **Queue arguments -> stream limits.** The stream must keep at least what the most generous
  legacy queue keeps, so a limit is set only when every bound queue has one, and then the
  largest: `x-message-ttl` -> `max_age`, `x-max-length` -> `max_msgs` (with `x-overflow`
  `drop-head` -> `discard: old`, `reject-publish[-dlx]` -> `discard: new`, when all agree),
  `x-max-length-bytes` -> `max_bytes`. Quorum and classic queues are durable on disk: `storage:
  file`, with a comment about replicas. `x-single-active-consumer` on a bound queue makes the
  route's shadow queue single-active-consumer too (order over scale-out, as the legacy chose).
* **Stream queues** (`x-queue-type: stream`) get a route with `mode: stream` in a service of
  their own and a stream `RMQS_<QUEUE>` on `<prefix>-stream.<queue>[.{rk}]`, with
  `x-max-age` -> `max_age` and `x-max-length-bytes` -> `max_bytes`; they are read, not
  shadowed, and kept apart from the exchange's copy because their Msg-Ids (queue/offset) differ.
* **Consumers** (rabbitmq/consumers.py): one durable consumer per shadowed queue, in the service
  whose route copies it, `replaces: {queue: ...}` (with the queue's keys as `bindings` when the
  route binds more), filters from its composed binding keys through the route's template (the
  narrowest covering filter, said so, where NATS has no exact one), `max_deliver` from
  `x-delivery-limit`, `ack_wait` from `x-consumer-timeout`, `max_ack_pending` from the consumers'
  prefetch (when the queue lists `consumer_details`: `--api` adds them, rabbitmq/prefetch.py) or a
  small `x-max-length`; dead lettering in a comment. validate and dry-run check it covers what
  the queue received.
* **Comments only** (no JetStream equivalent, or a decision for a person): dead-letter
  exchanges (pointing at the DLX's own stream and at the bridge's `dead_letters:` section),
  `x-max-priority`, `x-expires`, lazy mode, `alternate-exchange`, plugin exchange types
  (`x-consistent-hash`, `x-modulus-hash`, `x-delayed-message`, ...), queues reached only through
  the default exchange (which cannot be bound to, so they cannot be shadowed), auto-delete and
  exclusive queues.

The document is checked first (`check_definitions`): the three sections must be lists of
objects, names and keys text, flags booleans, arguments objects, and the queue arguments that
become stream limits whole numbers JetStream can hold. A malformed export is a list of errors
naming each key (`bindings[3].destination`), not a traceback and not a binding on the text `None`.
"""

from bridge.importers.rabbitmq.importer import import_definitions
from bridge.importers.rabbitmq.state import DEFAULT_PREFIX

__all__ = ["DEFAULT_PREFIX", "import_definitions"]
