"""Local services for a machine with no Docker and no root: a Kafka-protocol broker and PostgreSQL."""
