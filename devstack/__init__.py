"""The local stack (PostgreSQL, Redis, Kafka, Spark jars) as local processes; not in the runtime image."""
