"""RabbitMQ, through aio-pika and its aiormq channels: every connection is opened in `client.py`."""
