"""The inference engine: holds the loaded model and runs every torch call off the event loop.

Concurrent classify requests are merged into micro-batches: a request's image waits in a queue; one worker
task takes up to ``max_batch_size`` images, waiting at most ``max_batch_wait`` after the oldest arrived, and
runs them through the discriminator in one forward pass on a dedicated single-thread executor. One thread
means torch calls never overlap (its intra-op pool is sized by ``torch_threads``, set in that thread) and
the event loop only ever awaits a future. Several engines (several models, or the two versions of one model
during a live swap, app/registry.py) share one ``TorchThread``, so a process never runs two forward passes at
once whatever it serves.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from app.metrics import Metrics
from model import LoadedModel, ModelCard, class_probabilities, realness_from_logits
from model.imaging import pixels_to_tensor, tensor_to_pixels
from model.networks import fold_weight_norm
from model.suggest import ImageScores, score_images

logger = logging.getLogger(__name__)

# Latents drawn per round while /sample?label= looks for a class: large enough to amortise a forward pass,
# fixed so that a seed always draws the same sequence.
SAMPLE_DRAW_CHUNK = 64


# uint8 (B, C, H, W) -> probabilities (B, K) float32, realness (B,) float32: one forward pass of a backend.
Classifier = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class EngineUnavailable(RuntimeError):
    """The engine cannot take work now (queue full or shutting down): the client should retry (503)."""


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray  # (K,) float32, p(y=k | x, real)
    realness: float  # D(x) = p(real | x)


@dataclass(frozen=True)
class GeneratedSample:
    pixels: np.ndarray  # (C, H, W) uint8, exactly the PNG the client gets
    prediction: Prediction


@dataclass(frozen=True)
class SampleSet:
    seed: int
    samples: list[GeneratedSample]
    drawn: int  # latents drawn to find them (more than len(samples) with a label filter)


@dataclass
class _Job:
    pixels: np.ndarray  # (C, H, W) uint8
    future: asyncio.Future[Prediction]
    enqueued_at: float


class TorchThread:
    """The one thread that runs torch for its owners, with torch's intra-op pool sized in it."""

    def __init__(self, torch_threads: int | None = None) -> None:
        self.torch_threads = torch_threads
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgan-torch")
        self._previous_torch_threads: int | None = None

    async def start(self) -> None:
        if self.torch_threads is not None:
            # With OpenMP the thread count is a per-thread setting: set it in the one thread that runs torch.
            loop = asyncio.get_running_loop()
            self._previous_torch_threads = await loop.run_in_executor(
                self.executor, _swap_torch_threads, self.torch_threads
            )

    def close(self) -> None:
        if self._previous_torch_threads is not None:
            # torch also keeps the count process-wide for threads it has not started yet: leave it as found.
            self.executor.submit(torch.set_num_threads, self._previous_torch_threads)
        self.executor.shutdown(wait=True)


class InferenceEngine:
    def __init__(
        self,
        model: LoadedModel,
        *,
        max_batch_size: int = 32,
        max_batch_wait_s: float = 0.005,
        max_queue: int = 1024,
        torch_threads: int | None = None,
        metrics: Metrics | None = None,
        torch_thread: TorchThread | None = None,
        classifier: Classifier | None = None,
    ) -> None:
        """``torch_thread``: a thread shared with other engines (its owner starts and closes it); without one
        the engine runs its own, sized by ``torch_threads``. ``classifier``: the forward pass to use instead of
        the torch discriminator (app/backends.py)."""
        self.model = model
        fold_weight_norm(model.discriminator)
        fold_weight_norm(model.generator)
        self.max_batch_size = max_batch_size
        self.max_batch_wait_s = max_batch_wait_s
        self.max_queue = max_queue
        self.metrics = metrics
        self.classifier = classifier
        self._pending: collections.deque[_Job] = collections.deque()
        self._wakeup = asyncio.Event()
        self._owns_thread = torch_thread is None
        self._torch_thread = torch_thread if torch_thread is not None else TorchThread(torch_threads)
        self._executor = self._torch_thread.executor
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def card(self) -> ModelCard:
        return self.model.card

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._owns_thread:
            await self._torch_thread.start()
        self._worker = asyncio.create_task(self._run(), name="sgan-inference-worker")

    async def close(self) -> None:
        """Refuse new work, finish what is queued, then stop the worker (and its thread, if it owns one)."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            try:
                await self._worker
            finally:
                self._worker = None
        if self._owns_thread:
            self._torch_thread.close()

    # ------------------------------------------------------------------ public API

    async def classify(self, pixels: np.ndarray) -> Prediction:
        """Classify one uint8 (C, H, W) image; merged with concurrent calls into one forward pass."""
        return (await self.classify_many([pixels]))[0]

    async def classify_many(self, images: list[np.ndarray]) -> list[Prediction]:
        if self._closing:
            raise EngineUnavailable("the server is shutting down")
        if len(self._pending) + len(images) > self.max_queue:
            raise EngineUnavailable(f"the inference queue is full ({self.max_queue} images): retry shortly")
        loop = asyncio.get_running_loop()
        jobs = [_Job(pixels, loop.create_future(), loop.time()) for pixels in images]
        self._pending.extend(jobs)
        self._record_queue_depth()
        self._wakeup.set()
        return list(await asyncio.gather(*(job.future for job in jobs)))

    async def sample(self, count: int, seed: int, label_index: int | None = None, max_draws: int = 1024) -> SampleSet:
        """``count`` generated images from a seeded latent draw, each with the discriminator's verdict.

        With ``label_index``, keeps only samples the discriminator assigns to that class, drawing at most
        ``max_draws`` latents: the set may come back smaller than ``count``.
        """
        if self._closing:
            raise EngineUnavailable("the server is shutting down")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._sample_sync, count, seed, label_index, max_draws)

    async def score_for_labelling(self, images: np.ndarray) -> ImageScores:
        """Probabilities, realness and discriminator features of uint8 (B, C, H, W) images, for ranking them
        by what a label would teach (POST /suggest, model/suggest.py). One forward pass of the torch network on
        the torch thread, outside the micro-batches: the request already is a batch, and it needs the features,
        which the classify path (and its other backends) does not compute."""
        if self._closing:
            raise EngineUnavailable("the server is shutting down")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, score_images, self.model.discriminator, images)

    # ------------------------------------------------------------------ worker

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                if self._closing and not self._pending:
                    return  # drained
                continue
            pixels = np.stack([job.pixels for job in batch])  # (B, C, H, W) uint8
            try:
                probabilities, realness = await loop.run_in_executor(self._executor, self._forward_timed, pixels)
            except Exception as exc:  # a torch failure must fail these requests, not kill the worker
                logger.exception("inference failed for a batch of %d", len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for row, job in enumerate(batch):
                if not job.future.done():  # the client may have gone away meanwhile
                    job.future.set_result(Prediction(probabilities[row], float(realness[row])))

    async def _next_batch(self) -> list[_Job]:
        """Wait for work, then for the batch to fill or the oldest job's wait to run out. Empty when closing
        with nothing queued, or when every queued client went away (the caller then asks again)."""
        loop = asyncio.get_running_loop()
        while not self._pending:
            if self._closing:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        # The wait counts from the oldest job's arrival: time it already spent queued behind the previous
        # batch is not added again.
        deadline = self._pending[0].enqueued_at + self.max_batch_wait_s
        while len(self._pending) < self.max_batch_size and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                # Waiting on an Event (not on the queue itself) means a timeout can never lose a job.
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break
        batch: list[_Job] = []
        while self._pending and len(batch) < self.max_batch_size:
            job = self._pending.popleft()
            if not job.future.done():  # cancelled by a disconnected client: do not compute it
                batch.append(job)
        self._record_queue_depth()
        return batch

    def _record_queue_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._pending))

    # ------------------------------------------------------------------ torch (executor thread only)

    def _forward_timed(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        result = self._forward(pixels)
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(pixels))
            self.metrics.inference_seconds.observe(time.perf_counter() - start)
        return result

    def _forward(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (B, C, H, W) -> probabilities (B, K), realness (B,)."""
        if self.classifier is not None:
            return self.classifier(pixels)
        with torch.inference_mode():
            logits = self.model.discriminator(pixels_to_tensor(pixels))  # (B, K)
            probabilities = class_probabilities(logits).numpy()
            realness = realness_from_logits(logits).numpy()
        return probabilities, realness

    def _generate(self, count: int, rng: torch.Generator) -> np.ndarray:
        """``count`` seeded generator samples as uint8 (B, C, H, W), quantised like a saved PNG."""
        generator = self.model.generator
        with torch.inference_mode():
            latent = generator.sample_latent(count, generator=rng, device="cpu")  # (B, Z)
            images = generator(latent)  # (B, C, H, W) in [0, 1]
            return tensor_to_pixels(images)

    def _sample_sync(self, count: int, seed: int, label_index: int | None, max_draws: int) -> SampleSet:
        rng = torch.Generator().manual_seed(seed)
        found: list[GeneratedSample] = []
        drawn = 0
        draw_limit = count if label_index is None else max_draws
        while len(found) < count and drawn < draw_limit:
            size = count if label_index is None else min(SAMPLE_DRAW_CHUNK, draw_limit - drawn)
            pixels = self._generate(size, rng)
            drawn += size
            # Judge the quantised pixels, so the verdict is the one the client gets by posting the PNG back.
            probabilities, realness = self._forward(pixels)
            for row in range(size):
                if label_index is None or int(probabilities[row].argmax()) == label_index:
                    found.append(GeneratedSample(pixels[row], Prediction(probabilities[row], float(realness[row]))))
                    if len(found) == count:
                        break
        return SampleSet(seed, found, drawn)


def _swap_torch_threads(count: int) -> int:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    return previous
