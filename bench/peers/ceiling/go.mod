module natsbridge.bench/ceiling

go 1.25.0

require github.com/rabbitmq/amqp091-go v1.9.0
