"""Turning product events into stored vectors and ``ProductIndexed`` events (no Kafka here)."""

import base64
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from PIL import Image

from models.images.decoding import ImageError, ImagePolicy, decode_image
from models.images.thumbnails import thumbnail_jpeg
from models.predictor import Prediction, Predictor, ProductInput
from schemas import ProductIndexed, ProductListed, ProductUpdated
from schemas.products import CategorySource
from services.embedder.fetch import FetchError, ImageFetcher
from services.embedder.inference import InferenceLost, InferenceUnavailable, PredictorPool
from services.embedder.taxonomy import Classification, StoreTaxonomy
from services.vectors.store import ProductStore, StoredProduct

log = logging.getLogger(__name__)

Decoded = tuple[Image.Image | None, str | None]


@dataclass(frozen=True)
class Prepared:
    """A batch's listings made ready: pictures decoded, and with model processes, their
    predictions already under way (None: predicted when the batch is embedded)."""

    decoded: list[Decoded]
    predicting: "Future[list[Prediction]] | None" = None


@dataclass(frozen=True)
class Outcome:
    """What became of one event: a new ProductIndexed, a tombstone (None), or a refusal."""

    product_id: str
    indexed: ProductIndexed | None = None
    refused: str | None = None  # reason, for the dead-letter queue
    tombstone: bool = False


@dataclass(frozen=True)
class Categorised:
    """Where a product is filed, and what the classifier in use made of it."""

    category: str
    predicted: str
    confidence: float
    source: CategorySource


def categorise(product: ProductListed, prediction: Prediction, store: Classification | None = None) -> Categorised:
    """The store's own category when it gave one: filters, affinities, trending and reasons follow
    the store's taxonomy. Otherwise the store head's (``store``: None while it cannot be used), and
    the product model's classes only for a store that has labelled nothing."""
    if store is not None:
        predicted, confidence = store.guess, store.confidence
    else:
        predicted, confidence = prediction.category, prediction.confidence
    if product.category_hint:
        return Categorised(product.category_hint, predicted, confidence, "store")
    if store is not None:
        return Categorised(store.category, predicted, confidence, store.source)
    return Categorised(prediction.category, predicted, confidence, "model")


def payload_of(
    product: ProductListed,
    prediction: Prediction,
    filed: Categorised,
    model_version: str,
    indexed_at: datetime,
    picture: Image.Image | None = None,
) -> dict[str, Any]:
    return {
        "title": product.title,
        "price": product.price,
        "currency": product.currency,
        "in_stock": product.in_stock,
        "delisted": False,
        "category": filed.category,
        "predicted_category": filed.predicted,
        "confidence": round(filed.confidence, 6),
        "category_source": filed.source,
        "category_hint": product.category_hint,
        "listed_at": product.listed_at.isoformat(),
        "listed_ts": product.listed_at.timestamp(),
        "indexed_at": indexed_at.isoformat(),
        "model_version": model_version,
        "image_error": prediction.image_error,
        "has_image": "image" in prediction.vectors,
        "image_url": product.image_url,
        # Kept small (a few KiB) and left out of searches; the API serves it to product cards.
        "thumbnail": base64.b64encode(thumbnail_jpeg(picture)).decode() if picture is not None else None,
    }


class Indexer:
    """Decodes (in a thread pool), predicts, and writes products to the store."""

    def __init__(
        self,
        predictor: Predictor,
        store: ProductStore,
        fetcher: ImageFetcher,
        pool: Executor,
        image_policy: ImagePolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        taxonomy: StoreTaxonomy | None = None,
        models: PredictorPool | None = None,
    ) -> None:
        self._predictor = predictor
        self._models = models
        self._taxonomy = taxonomy
        self._store = store
        self._fetcher = fetcher
        self._pool = pool
        self._policy = image_policy
        self._clock = clock

    def decode_all(self, products: Sequence[ProductListed]) -> list[Decoded]:
        """Fetch and decode every picture in parallel; failures become reasons, never exceptions."""
        return list(self._pool.map(self.decode_one, products))

    def prepare(self, products: Sequence[ProductListed]) -> Prepared:
        """Decode every picture; with model processes, start predicting at once, so the model
        works on this batch while the one before is filed and written."""
        decoded = self.decode_all(products)
        if self._models is None or not products:
            return Prepared(decoded)
        try:
            return Prepared(decoded, self._models.submit(self._inputs(products), decoded))
        except Exception:  # the pool could not take it (a process died): embed() predicts again
            log.exception("could not start predicting a batch early")
            return Prepared(decoded)

    def decode_one(self, product: ProductListed) -> Decoded:
        try:
            if product.image is not None:
                data = product.image
            elif product.image_url is not None:
                data = self._fetcher.fetch(product.image_url)
            else:
                return None, None
            return decode_image(data, self._policy), None
        except (ImageError, FetchError) as exc:
            return None, str(exc)[:500]

    def index(self, products: Sequence[ProductListed], decoded: Sequence[Decoded]) -> list[Outcome]:
        """One Predictor call for the batch, one durable upsert; the outcomes in input order."""
        stored, outcomes = self.embed(products, decoded)
        self.write(stored)
        return outcomes

    def embed(
        self, products: Sequence[ProductListed], decoded: Sequence[Decoded], predicted: Sequence[Prediction] | None = None
    ) -> tuple[list[StoredProduct], list[Outcome]]:
        """One Predictor call for the batch (none when ``predicted`` is given, from :meth:`prepare`):
        what to store, and the outcomes once it is stored.

        Nothing is written here, so a worker can embed one batch while another is written.
        """
        if not products:
            return [], []
        if predicted is None:
            predicted = self._predict(products, decoded)
        predictions = predicted
        filed = self._categorise(products, predictions)
        now = self._clock()
        version = self._predictor.model_version
        stored, outcomes = [], []
        for product, prediction, f, (picture, _) in zip(products, predictions, filed, decoded, strict=True):
            indexed_at = max(now, product.listed_at)
            stored.append(
                StoredProduct(product.product_id, prediction.vectors, payload_of(product, prediction, f, version, indexed_at, picture))
            )
            outcomes.append(
                Outcome(
                    product.product_id,
                    ProductIndexed(
                        product_id=product.product_id,
                        title=product.title,
                        price=product.price,
                        currency=product.currency,
                        in_stock=product.in_stock,
                        category=f.category,
                        predicted_category=f.predicted,
                        confidence=min(1.0, max(0.0, f.confidence)),
                        category_source=f.source,
                        vectors=prediction.vectors,
                        image_error=prediction.image_error,
                        model_version=version,
                        listed_at=product.listed_at,
                        indexed_at=indexed_at,
                    ),
                )
            )
        return stored, outcomes

    @staticmethod
    def _inputs(products: Sequence[ProductListed]) -> list[ProductInput]:
        return [ProductInput(title=p.title, description=p.description) for p in products]

    def _predict(self, products: Sequence[ProductListed], decoded: Sequence[Decoded]) -> Sequence[Prediction]:
        if self._models is not None:
            return self._models.predict_decoded(self._inputs(products), decoded)
        return self._predictor.predict_decoded(self._inputs(products), decoded)

    def predicted(self, prepared: Prepared) -> list[Prediction] | None:
        """The predictions :meth:`prepare` started, or None where there are none to use (none
        started, or the model raised: each run is then predicted again, and a fault isolated).
        Raises InferenceLost when a model process died with them (the caller then goes one by
        one at once) and InferenceUnavailable when the processes cannot be started again."""
        if prepared.predicting is None or self._models is None:
            return None
        try:
            predicted = self._models.collect(prepared.predicting)
        except (InferenceLost, InferenceUnavailable):
            raise
        except Exception:
            log.exception("a batch's early predictions failed; predicting it again")
            return None
        return predicted if len(predicted) == len(prepared.decoded) else None

    def _categorise(self, products: Sequence[ProductListed], predictions: Sequence[Prediction]) -> list[Categorised]:
        """Labelled listings teach the store head first, so the batch's others already benefit."""
        store: Sequence[Classification | None] = [None] * len(products)
        if self._taxonomy is not None:
            fused = np.array([p.vectors["fused"] for p in predictions], dtype=np.float32)
            self._taxonomy.learn(
                (product.product_id, fused[i], product.category_hint) for i, product in enumerate(products) if product.category_hint
            )
            store = self._taxonomy.classify(fused) or store
        return [categorise(product, prediction, s) for product, prediction, s in zip(products, predictions, store, strict=True)]

    def write(self, stored: Sequence[StoredProduct]) -> None:
        """One durable upsert (flushed before it returns)."""
        if stored:
            self._store.upsert(list(stored))

    def update(self, event: ProductUpdated) -> Outcome:
        """Apply a stock/price/delisting change to the payload, without re-embedding."""
        changes: dict[str, Any] = {}
        if event.in_stock is not None:
            changes["in_stock"] = event.in_stock
        if event.price is not None:
            changes["price"], changes["currency"] = event.price, event.currency
        if event.delisted:
            changes |= {"delisted": True, "in_stock": False}
        if not self._store.update_payload(event.product_id, changes):
            return Outcome(event.product_id, refused="unknown product: it was never listed (or not yet indexed)")
        if event.delisted:
            return Outcome(event.product_id, tombstone=True)
        (current,) = self._store.get([event.product_id], with_vectors=True)
        return Outcome(event.product_id, indexed_event(current, self._clock()))


def indexed_event(stored: StoredProduct, now: datetime) -> ProductIndexed:
    """The ``products.indexed`` event of a stored product, as its payload and vectors stand."""
    p = stored.payload
    listed_at = datetime.fromisoformat(p["listed_at"])
    return ProductIndexed(
        product_id=stored.product_id,
        title=p["title"],
        price=p["price"],
        currency=p["currency"],
        in_stock=p["in_stock"],
        category=p["category"],
        predicted_category=p.get("predicted_category"),
        confidence=p["confidence"],
        category_source=p.get("category_source"),
        vectors={k: list(v) for k, v in stored.vectors.items()},
        image_error=p.get("image_error"),
        model_version=p["model_version"],
        listed_at=listed_at,
        indexed_at=max(now, listed_at),
    )
