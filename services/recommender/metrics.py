"""The recommender's Prometheus metrics, in a registry of its own."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class RecommenderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "shelfsight_recommender_requests",
            "Recommendation requests, by interface and outcome.",
            ["interface", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shelfsight_recommender_seconds",
            "Time to answer one request, by interface.",
            ["interface"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter("shelfsight_api_events", "Events posted to /v1/events, by outcome.", ["outcome"], registry=self.registry)
        self.refused = Counter(
            "shelfsight_api_refused",
            "Requests refused by a guard: shopper_token, rate_limited (429, or 413 for a batch over a burst).",
            ["reason"],
            registry=self.registry,
        )
        self.streams = Gauge("shelfsight_api_streams", "Open Server-Sent Event streams.", registry=self.registry)
        self.served_unlogged = Counter(
            "shelfsight_served_unlogged",
            "Served lists not logged to recommendations.served, by reason: over_rate (SHELFSIGHT_SERVED_LOG_PER_S), failed.",
            ["reason"],
            registry=self.registry,
        )
