"""Kafka, through aiokafka: every aiokafka client the bridge opens is built in `client.py`."""
