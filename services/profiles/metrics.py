"""The profiles worker's Prometheus metrics, in a registry of its own."""

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ProfilesMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter("shelfsight_profiles_events", "Click events, by outcome.", ["outcome"], registry=self.registry)
        self.items = Counter("shelfsight_profiles_items", "products.indexed events applied.", registry=self.registry)
        self.served = Counter("shelfsight_profiles_served_lists", "Served lists kept for joining with choices.", registry=self.registry)
        self.choices = Counter(
            "shelfsight_profiles_ranking_choices",
            "Choices joined with the list they were made from: ranking examples learned.",
            registry=self.registry,
        )
        self.update_seconds = Histogram(
            "shelfsight_profiles_update_seconds",
            "Time to apply one batch of clicks to Redis.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=self.registry,
        )
        self.parked = Gauge("shelfsight_profiles_parked", "Clicks waiting for their product to be indexed.", registry=self.registry)
        self.lag = Gauge("shelfsight_profiles_consumer_lag", "Click events behind the end of the topic.", registry=self.registry)
        self.last_batch = Gauge(
            "shelfsight_profiles_last_batch_timestamp_seconds",
            "When the latest click batch was consumed (Unix time).",
            registry=self.registry,
        )
        self.batch_consumed()  # a fresh worker counts as having just made progress

    def batch_consumed(self) -> None:
        self.last_batch_at = time.time()
        self.last_batch.set(self.last_batch_at)
