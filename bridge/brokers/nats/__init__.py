"""NATS, the broker everything moves to: client.py is the one place a NATS connection is made
(TLS, credentials, NKeys, reconnect behaviour), admin.py what the commands ask JetStream about its
streams. What the bridge does with JetStream (publish, declare, checkpoint) is bridge.jetstream."""
