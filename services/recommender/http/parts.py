"""What the API talks to, built by `shelfsight serve` (or a test or benchmark) and passed in."""

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from schemas.experiments import Experiment, ExperimentReport
from services.bus.producer import Producer
from services.recommender.engine import Recommender
from services.recommender.http.live import LiveUpdates
from services.recommender.metrics import RecommenderMetrics
from services.settings import Settings
from services.vectors.store import ProductStore


@dataclass
class ApiParts:
    """What the API talks to; built by `shelfsight serve` (or a test) and passed in."""

    settings: Settings
    engine: Recommender
    store: ProductStore
    producer: Producer
    live: LiveUpdates
    metrics: RecommenderMetrics
    registries: tuple[CollectorRegistry, ...] = ()
    health: Callable[[], dict[str, object]] = lambda: {"healthy": True}
    model_version: Callable[[], str | None] = lambda: None
    experiment_report: Callable[[str, str], ExperimentReport] | None = None  # (id, metric) → report; None: no experiment routes
    experiments: Callable[[], list[Experiment]] = list
