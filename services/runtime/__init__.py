"""What one service needs to run on the bus: the bus (interface, Kafka, in-process), the
service runner and its outbox, and the embedded broker. Knows no service by name."""
