"""Thin adapters between Shelfsight and Kafka (confluent-kafka).

Clients are created from settings passed to constructors; nothing here is global.
"""
