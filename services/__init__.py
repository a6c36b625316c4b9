"""Shelfsight's I/O edges: one folder per service, plus the shared plumbing.

- ``stack``  — starts a local Apache Kafka (KRaft) and redis-server for development and CI
- ``bus``    — thin confluent-kafka adapters: producer, consumer, dead-letter queue
- ``cli``    — the ``shelfsight`` command
"""
