"""The model's share of the embedder spread over processes, one torch thread each.

On a CPU, one process running torch on every core loses about a third of the model's pace
once the embedder's own work runs beside it (docs/benchmarks.md): the writer's Qdrant call
holds the GIL between torch's operations, and an OpenMP team waits at every barrier for the
thread the kernel took a core from. Single-threaded processes have no team to wait for and a
GIL of their own. The embedder's process keeps everything else (Kafka, decoding, the store
head, the writes) and hands each batch's pictures and texts to the processes in equal parts.

A process that dies (killed for memory, a crash in native code) breaks the pool: the batch
raises :class:`InferenceLost`, the pool is started afresh, and the worker embeds the batch's
listings one by one, so a listing that kills the model every time is dead-lettered alone.
"""

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import torch
from PIL import Image

from models.images.decoding import ImagePolicy
from models.predictor import LoadedFrom, Prediction, Predictor, ProductInput

log = logging.getLogger(__name__)

Decoded = tuple[Image.Image | None, str | None]


class InferenceLost(RuntimeError):
    """A model process died with the batch in hand; the pool has been started afresh."""


class InferenceUnavailable(RuntimeError):
    """The model processes could not be started (memory, the checkpoint gone): no listing's fault,
    so the batch is not refused but redone once the embedder is restarted."""


class _Broken(Exception):
    """Which pool broke, carried to whoever collects the batch."""

    def __init__(self, pool: ProcessPoolExecutor, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.pool = pool


@dataclass(frozen=True)
class ModelSpec:
    """What a model process loads: the embedder's own Predictor, loaded the same way."""

    origin: LoadedFrom
    image_policy: ImagePolicy
    mirror_average: bool

    @classmethod
    def of(cls, predictor: Predictor) -> "ModelSpec | None":
        """None for a Predictor another process cannot load the same (built in memory), or one
        on an accelerator, which runs the model faster alone than processes sharing it."""
        if predictor.origin is None or predictor.device.type != "cpu":
            return None
        return cls(predictor.origin, predictor.image_policy, predictor.mirror_average)


DEFAULT_MOST = 4  # model processes by default, however many cores: each holds its own model


def cpu_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def predictor_pool(predictor: Predictor, processes: int | None) -> "PredictorPool | None":
    """Model processes for ``predictor`` (``processes`` None: one per core, at most
    DEFAULT_MOST), or None where the model runs in-process: one process asked for, one core,
    an accelerator, or a Predictor that was not loaded from a checkpoint."""
    spec = ModelSpec.of(predictor)
    count = processes if processes is not None else min(cpu_cores(), DEFAULT_MOST)
    if spec is None or count < 2:
        return None
    return PredictorPool(predictor, spec, count)


_model: Predictor | None = None


def _load(spec: ModelSpec) -> None:
    global _model
    # Ctrl-C reaches the whole process group: the embedder finishes its batch in hand with these
    # processes and then closes them itself. SIGTERM still ends one: a broken pool's survivors
    # are ended with it, and one that ignored it would live on, holding its model.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One thread: the processes share the cores, none waits on a team of its own.
    torch.set_num_threads(1)
    o = spec.origin
    _model = Predictor.load(
        o.checkpoint, device="cpu", image_policy=spec.image_policy, input_size=o.input_size, text=o.text, mirror_average=spec.mirror_average
    )


def _predict(inputs: list[ProductInput], decoded: list[tuple[Image.Image | torch.Tensor | None, str | None]]) -> list[Prediction]:
    assert _model is not None, "the model process was not initialised"
    return _model.predict_decoded(inputs, decoded)


def _pid() -> int:
    return os.getpid()


class PredictorPool:
    """``predict_decoded`` of a CPU Predictor, run by ``processes`` model processes.

    Everything else (the version, the vectors' sizes, the categories) is the local
    ``predictor``'s, which is the same checkpoint loaded with the same options.
    """

    def __init__(self, predictor: Predictor, spec: ModelSpec, processes: int, load: Callable[[ModelSpec], None] = _load) -> None:
        """``load`` runs in each model process before its first batch (tests wrap the model there)."""
        if processes < 1:
            raise ValueError("a predictor pool needs at least one process")
        self.predictor = predictor
        self._spec = spec
        self._load = load
        self.processes = processes
        self._lock = threading.Lock()
        side = predictor.model.encoder.preprocessing.resize_size
        self._small = 4 * side * side  # pixels: twice the model's resize side each way
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: a forked child inherits torch's thread pools half-initialised.
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(self.processes, mp_context=context, initializer=self._load, initargs=(self._spec,))
        try:
            # Load every model now (each process takes one task), so the first batch does not wait.
            for f in [pool.submit(_pid) for _ in range(self.processes)]:
                f.result()
        except Exception as exc:
            pool.shutdown(wait=False, cancel_futures=True)
            raise InferenceUnavailable(f"the model processes could not be started: {type(exc).__name__}: {exc}"[:300]) from exc
        log.info("model processes ready", extra={"processes": self.processes})
        return pool

    @property
    def model_version(self) -> str:
        return self.predictor.model_version

    def predict_decoded(self, products: Sequence[ProductInput], decoded: Sequence[Decoded]) -> list[Prediction]:
        """The same answers as ``Predictor.predict_decoded``: the batch in equal parts, in order."""
        return self.collect(self.submit(products, decoded))

    def submit(self, products: Sequence[ProductInput], decoded: Sequence[Decoded]) -> "Future[list[Prediction]]":
        """Start predicting a batch; :meth:`collect` gives the answers."""
        gathered: Future[list[Prediction]] = Future()
        if not products:
            gathered.set_result([])
            return gathered
        parts = min(self.processes, len(products))
        size = -(-len(products) // parts)
        with self._lock:
            pool = self._pool
        futures: list[Future[list[Prediction]]] = []
        try:
            for i in range(0, len(products), size):
                # Each part goes as soon as it is ready: the first is embedded while the next resizes.
                part = [(self._travelling(p), error) for p, error in decoded[i : i + size]]
                futures.append(pool.submit(_predict, list(products[i : i + size]), part))
        except BrokenProcessPool as exc:
            gathered.set_exception(_Broken(pool, exc))
            return gathered
        left = [len(futures)]
        counting = threading.Lock()

        def one_done(_: Future[list[Prediction]]) -> None:
            with counting:
                left[0] -= 1
                if left[0]:
                    return
            try:
                gathered.set_result([p for f in futures for p in f.result()])
            except BrokenProcessPool as exc:
                gathered.set_exception(_Broken(pool, exc))
            except Exception as exc:  # the model's own error, raised as in-process
                gathered.set_exception(exc)
            except BaseException as exc:  # e.g. a KeyboardInterrupt in a model process: not the caller's to receive raw
                gathered.set_exception(RuntimeError(f"a model process stopped: {type(exc).__name__}"))

        for f in futures:
            f.add_done_callback(one_done)
        return gathered

    def collect(self, predicting: "Future[list[Prediction]]") -> list[Prediction]:
        """A submitted batch's answers. A dead model process raises InferenceLost, once the
        processes are started afresh (here, not in a callback of the broken pool's own thread)."""
        try:
            return predicting.result()
        except _Broken as broken:
            self._restart(broken.pool)
            raise InferenceLost("a model process died while embedding this batch") from None

    def _travelling(self, picture: Image.Image | None) -> Image.Image | torch.Tensor | None:
        """A small picture travels as it is and is resized by the model process, in parallel; a
        large one is resized here first, so megabytes of pixels do not cross the pipe."""
        if picture is None or picture.width * picture.height <= self._small:
            return picture
        return self.predictor.resize(picture)

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is not broken:  # another caller restarted it already
                return
            log.error("a model process died; starting the model processes again", extra={"processes": self.processes})
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()

    def pids(self) -> list[int]:
        """The model processes' ids (for tests and logs)."""
        with self._lock:
            return sorted(p.pid for p in (self._pool._processes or {}).values() if p.pid is not None)

    def close(self) -> None:
        with self._lock:
            self._pool.shutdown(wait=True, cancel_futures=True)
