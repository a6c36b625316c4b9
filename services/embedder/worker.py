"""The Kafka side of the embedder: consume, micro-batch, index, publish, commit.

At-least-once: a batch's offsets are committed only after its products are durably in
the store and its ``products.indexed`` events (and dead letters) are delivered. Re-running
a batch is harmless: point ids derive from product ids, and products.indexed is compacted.

Three batches are in hand at once, each at its own stage, so the model is not left waiting
for I/O: the newest is fetched and its pictures decode in the thread pool; the one before is
embedded on the worker's thread; the one before that is written by the writer thread (store
upsert and flush, then its ``products.indexed`` events and dead letters, delivered). Writes
stay in batch order (one writer, one batch at a time), and a batch's offsets are committed on
the worker's thread once its write is done, so the at-least-once order is unchanged.
"""

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from models.predictor import Prediction
from schemas import ContractError, ProductListed, ProductUpdated, decode, encode
from schemas.serde import EncodedMessage
from schemas.topics import PRODUCTS_INDEXED, PRODUCTS_LISTED
from services.bus.dead_letters import dead_letter
from services.bus.messages import position
from services.bus.producer import Producer
from services.embedder.indexing import Decoded, Indexer, Outcome, Prepared
from services.embedder.inference import InferenceLost, InferenceUnavailable
from services.embedder.metrics import EmbedderMetrics
from services.settings import Settings
from services.vectors.store import StoredProduct

log = logging.getLogger(__name__)

GROUP_ID = "shelfsight-embedder"


@dataclass
class _Batch:
    messages: list[Message]
    events: list[ProductListed | ProductUpdated | ContractError]
    prepared: Future[Prepared]
    started: float = field(default_factory=time.perf_counter)


@dataclass
class _Step:
    """One store operation of a batch, in message order, as the writer applies it."""

    stored: list[StoredProduct] = field(default_factory=list)  # upserted first …
    outcomes: list[Outcome] = field(default_factory=list)  # … then these count (embedded listings, refusals)
    update: ProductUpdated | None = None  # applied on the writer: it reads what earlier steps wrote


@dataclass(frozen=True)
class _Output:
    topic: str
    key: bytes | None
    message: EncodedMessage | None  # None: a tombstone
    kind: str  # indexed | updated | delisted | dead_letter


class UndeliveredError(RuntimeError):
    """Kafka did not take our output; the batch is not committed and will be redone."""


class EmbedderWorker:
    def __init__(
        self,
        settings: Settings,
        indexer: Indexer,
        consumer: Consumer,
        producer: Producer,
        metrics: EmbedderMetrics,
        group: str = GROUP_ID,
        publish_indexed: bool = True,
    ) -> None:
        self._settings = settings
        self._group = group
        # Off while `shelfsight reembed` fills a version that is not live yet: products.indexed
        # (and the profiles worker's copy of each product) carries the live version only.
        self._publish_indexed = publish_indexed
        self._indexer = indexer
        self._consumer = consumer
        self._producer = producer
        # The next batch is prepared on a thread of its own: it fans out onto the indexer's
        # decode pool, and waiting on that pool from one of its own threads would deadlock a
        # small pool (SHELFSIGHT_EMBEDDER_DECODE_THREADS 1 or 2).
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="writer")
        self._writing: tuple[_Batch, Future[list[_Output]]] | None = None
        self.metrics = metrics
        self._source = settings.topic(PRODUCTS_LISTED.name)
        self._output = settings.topic(PRODUCTS_INDEXED.name)
        self._dlq = settings.topic(PRODUCTS_LISTED.dlq)
        self._pending: _Batch | None = None
        self.last_progress = time.monotonic()
        self.indexed_total = 0

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set; then finish the batch in hand, commit, and close the consumer."""
        self._consumer.subscribe([self._source], on_revoke=self._on_revoke)
        log.info("embedder consuming", extra={"topic": self._source, "group": self._settings.group(self._group)})
        try:
            while not stop.is_set():
                batch = self._next_batch()
                self._advance()
                self._pending = batch
                self.last_progress = time.monotonic()
            self._drain()
        finally:
            self._prefetch.shutdown(wait=True)
            # A write still in flight after an error finishes, but is not committed: it is redone.
            self._writer.shutdown(wait=True)
            self._consumer.close()

    def _next_batch(self) -> _Batch | None:
        messages = self._consumer.consume(
            num_messages=self._settings.embedder_batch_size, timeout=self._settings.embedder_max_wait_ms / 1000
        )
        kept = []
        for m in messages:
            if error := m.error():
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", extra={"error": error.str()})
                continue
            kept.append(m)
        if not kept:
            return None
        events: list[ProductListed | ProductUpdated | ContractError] = []
        for m in kept:
            try:
                events.append(decode(PRODUCTS_LISTED.reader, m.value()))
            except ContractError as exc:
                events.append(exc)
        listed = [e for e in events if isinstance(e, ProductListed)]
        return _Batch(kept, events, self._prefetch.submit(self._indexer.prepare, listed))

    def _on_revoke(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        # Finish what we hold before the partitions move, so the next owner starts after it.
        self._drain()

    def _drain(self) -> None:
        """Embed and write the batch in hand, and commit everything written."""
        self._advance()
        self._settle()

    def _advance(self) -> None:
        """Embed the batch in hand while the writer writes the previous one, then hand it over."""
        batch, self._pending = self._pending, None
        if batch is None:
            self._settle()
            return
        steps = self._embed(batch)
        self._settle()
        self._writing = (batch, self._writer.submit(self._write, batch, steps))

    def _settle(self) -> None:
        """Wait for the write in flight; commit its offsets (on this thread: the consumer's)."""
        writing, self._writing = self._writing, None
        if writing is None:
            return
        batch, future = writing
        output = future.result()  # a failed write raises here: the batch is not committed
        self._commit(batch.messages)
        self._account(output, batch)

    def _embed(self, batch: _Batch) -> list[_Step]:
        """The batch's store operations in message order; runs of listings are embedded together."""
        prepared = batch.prepared.result()
        decoded = iter(prepared.decoded)
        # Predictions started early are used run by run; without them each run is predicted alone,
        # and when a model process died with them, each listing alone.
        try:
            whole, alone = self._indexer.predicted(prepared), False
        except InferenceLost:
            log.warning("a model process died with a batch; embedding its listings one by one")
            whole, alone = None, True
        predicted = iter(whole) if whole is not None else None
        steps: list[_Step] = []
        run: list[ProductListed] = []

        def flush_run() -> None:
            if run:
                ready = [next(predicted) for _ in run] if predicted is not None else None
                stored, outcomes = self._embed_run(run, [next(decoded) for _ in run], ready, alone)
                steps.append(_Step(stored=stored, outcomes=outcomes))
                run.clear()

        for event in batch.events:
            if isinstance(event, ProductListed):
                run.append(event)
                continue
            flush_run()
            if isinstance(event, ContractError):
                steps.append(_Step(outcomes=[Outcome("", refused=event.reason)]))
            else:
                steps.append(_Step(update=event))
        flush_run()
        return steps

    def _embed_run(
        self, run: list[ProductListed], decoded: list[Decoded], predicted: list[Prediction] | None = None, alone: bool = False
    ) -> tuple[list[StoredProduct], list[Outcome]]:
        """Embed listings together; when that fails (or ``alone``), one by one, so a listing that
        breaks the model is dead-lettered alone and the rest are indexed. Model processes that
        cannot be started again are no listing's fault: that raises, and the batch is redone."""
        if not alone:
            try:
                return self._indexer.embed(run, decoded, predicted)
            except InferenceUnavailable:
                raise
            except Exception:
                log.exception("a batch of listings failed to embed; embedding them one by one", extra={"listings": len(run)})
        stored: list[StoredProduct] = []
        outcomes: list[Outcome] = []
        for product, picture in zip(run, decoded, strict=True):
            try:
                one_stored, one_outcome = self._embed_one(product, picture)
            except InferenceUnavailable:
                raise
            except Exception as exc:  # this listing's own fault: the model or its contract cannot take it
                log.exception("listing could not be embedded", extra={"product_id": product.product_id})
                outcomes.append(Outcome(product.product_id, refused=f"could not be embedded: {type(exc).__name__}"))
                continue
            stored += one_stored
            outcomes += one_outcome
        return stored, outcomes

    def _embed_one(self, product: ProductListed, picture: Decoded) -> tuple[list[StoredProduct], list[Outcome]]:
        """One listing; a model process lost once may have been the next batch's doing (its
        predictions start early on the same processes), so it is tried a second time."""
        try:
            return self._indexer.embed([product], [picture])
        except InferenceLost:
            return self._indexer.embed([product], [picture])

    def _update(self, event: ProductUpdated) -> Outcome:
        """A change to a stored product; one the stored payload cannot take is refused, not raised
        (store outages still raise: the batch is then redone, not dead-lettered)."""
        try:
            return self._indexer.update(event)
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError and ContractError are ValueErrors
            log.exception("update could not be applied", extra={"product_id": event.product_id})
            return Outcome(event.product_id, refused=f"update could not be applied: {type(exc).__name__}")

    def _write(self, batch: _Batch, steps: list[_Step]) -> list["_Output"]:
        """On the writer thread: store, then deliver the batch's events; what was delivered."""
        outcomes: list[Outcome] = []
        for step in steps:
            self._indexer.write(step.stored)
            outcomes.extend(step.outcomes)
            if step.update is not None:
                outcomes.append(self._update(step.update))
        output = [
            self._output_of(message, event, outcome) for message, event, outcome in zip(batch.messages, batch.events, outcomes, strict=True)
        ]
        self._publish([item for item in output if item is not None])
        return [item for item in output if item is not None]

    def _output_of(self, message: Message, event: object, outcome: Outcome) -> "_Output | None":
        refused = outcome.refused
        if refused is None and not self._publish_indexed:
            return None
        if refused is None and outcome.indexed is not None:
            try:
                kind = "indexed" if isinstance(event, ProductListed) else "updated"
                return _Output(self._output, outcome.product_id.encode(), encode(outcome.indexed), kind)
            except ContractError as exc:  # stored, but its event would not fit the topic
                refused = f"indexed, but products.indexed refused it: {exc.reason}"
        if refused is not None:
            letter = dead_letter(
                value=message.value(),
                key=message.key(),
                reason=refused,
                source_topic=self._source,
                service="embedder",
                partition=message.partition(),
                offset=message.offset(),
            )
            return _Output(self._dlq, letter.key, letter, "dead_letter")
        if outcome.tombstone:
            return _Output(self._output, outcome.product_id.encode(), None, "delisted")
        return None

    def _publish(self, output: list["_Output"]) -> None:
        failures: list[str] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(error.str())

        for item in output:
            if item.message is None:
                # A tombstone removes the product from the compacted products.indexed.
                self._producer.send_tombstone(item.topic, item.key or b"", delivered)
            else:
                self._producer.send(item.topic, item.message, delivered)
        if self._producer.flush(self._settings.embedder_delivery_timeout_s) or failures:
            raise UndeliveredError(f"could not deliver output of a batch: {failures[:1] or 'timeout'}")

    def _commit(self, messages: list[Message]) -> None:
        last: dict[tuple[str, int], int] = {}
        for m in messages:
            topic, partition, offset = position(m)
            last[(topic, partition)] = max(last.get((topic, partition), -1), offset)
        self._consumer.commit(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()], asynchronous=False)

    def _account(self, output: list["_Output"], batch: _Batch) -> None:
        for item in output:
            self.metrics.messages.labels(item.kind).inc()
            if item.kind == "dead_letter":
                self.metrics.dead_letters.inc()
        self.indexed_total += sum(1 for item in output if item.kind == "indexed")
        self.metrics.batches.inc()
        self.metrics.batch_seconds.observe(time.perf_counter() - batch.started)
        self.metrics.lag.set(self._lag())

    def _lag(self) -> int:
        lag = 0
        for tp in self._consumer.assignment():
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
            position = self._consumer.position([tp])[0].offset
            if position >= 0 and high >= 0:
                lag += max(0, high - position)
        return lag
