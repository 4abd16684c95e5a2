"""Cut-over, service by service: phases kept in NATS KV, drain, retire, status.

The phase of each service lives in one KV bucket so every bridge instance (and the
`cutover` and `status` commands) agree on it without talking to each other: bridges poll it
and react within seconds; the command changes it with a compare-and-set, so two operators
cannot both win a race.
"""
