"""The embedder's Prometheus metrics, in a registry of its own (no global state)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class EmbedderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.messages = Counter("shelfsight_embedder_messages", "Messages handled, by outcome.", ["outcome"], registry=self.registry)
        self.batches = Counter("shelfsight_embedder_batches", "Batches processed.", registry=self.registry)
        self.batch_seconds = Histogram(
            "shelfsight_embedder_batch_seconds",
            "Time from a batch's decode to its commit.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.dead_letters = Counter("shelfsight_embedder_dead_letters", "Messages sent to the DLQ.", registry=self.registry)
        self.lag = Gauge("shelfsight_embedder_consumer_lag", "Messages behind the end of products.listed.", registry=self.registry)
