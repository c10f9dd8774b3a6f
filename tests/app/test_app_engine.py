"""The micro-batching engine on its own: batched answers equal lone answers, batches respect their bounds,
a full queue refuses work, and closing finishes what was queued."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from app.engine import EngineUnavailable, InferenceEngine
from app.metrics import Metrics
from model import load_model_dir

pytest_plugins = ["app_fixtures"]  # the fixtures of tests/app (see app_fixtures.py)


def distinct_images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(1, 28, 28), dtype=np.uint8) for _ in range(count)]


def batch_sizes(metrics: Metrics) -> tuple[float, float]:
    """(number of forward passes, images through them) from the batch-size histogram."""
    samples = {s.name: s.value for s in metrics.batch_size.collect()[0].samples if not s.labels.get("le")}
    return samples["sgan_inference_batch_size_count"], samples["sgan_inference_batch_size_sum"]


def run(coroutine_function, model_dir: Path, **options):
    async def main():
        engine = InferenceEngine(load_model_dir(model_dir), torch_threads=1, **options)
        await engine.start()
        try:
            return await coroutine_function(engine)
        finally:
            await engine.close()

    return asyncio.run(main())


def test_concurrent_requests_are_batched_and_answer_as_if_alone(app_model_dir: Path) -> None:
    images = distinct_images(40)
    metrics = Metrics()

    async def scenario(engine: InferenceEngine):
        engine.max_batch_wait_s = 0.0  # nobody to wait for: one forward pass each, at once
        alone = [await engine.classify(image) for image in images]
        passes_alone = batch_sizes(metrics)[0]
        engine.max_batch_wait_s = 0.05
        together = await asyncio.gather(*(engine.classify(image) for image in images))
        return alone, passes_alone, together

    alone, passes_alone, together = run(
        scenario, app_model_dir, max_batch_size=64, max_batch_wait_s=0.05, metrics=metrics
    )
    assert passes_alone == 40
    passes, images_seen = batch_sizes(metrics)
    assert images_seen == 80
    assert passes - passes_alone < 5  # the 40 concurrent calls shared a handful of forward passes
    for single, batched in zip(alone, together, strict=True):
        # Batched float math may differ from a lone pass in the last bits, never more.
        np.testing.assert_allclose(batched.probabilities, single.probabilities, rtol=0, atol=1e-5)
        assert batched.realness == pytest.approx(single.realness, abs=1e-5)


def test_batches_never_exceed_the_maximum_size(app_model_dir: Path) -> None:
    metrics = Metrics()

    async def scenario(engine: InferenceEngine):
        await asyncio.gather(*(engine.classify(image) for image in distinct_images(20)))

    run(scenario, app_model_dir, max_batch_size=8, max_batch_wait_s=0.05, metrics=metrics)
    buckets = {s.labels["le"]: s.value for s in metrics.batch_size.collect()[0].samples if s.labels.get("le")}
    assert buckets["8.0"] == buckets["+Inf"] == 3  # 8 + 8 + 4


def test_a_full_queue_refuses_work_instead_of_growing(app_model_dir: Path) -> None:
    async def scenario(engine: InferenceEngine):
        with pytest.raises(EngineUnavailable, match="queue is full"):
            await engine.classify_many(distinct_images(3))
        return await engine.classify_many(distinct_images(2))

    assert len(run(scenario, app_model_dir, max_queue=2)) == 2


def test_close_finishes_queued_work_then_refuses_more(app_model_dir: Path) -> None:
    async def main():
        engine = InferenceEngine(load_model_dir(app_model_dir), max_batch_wait_s=0.2)
        await engine.start()
        pending = asyncio.ensure_future(engine.classify_many(distinct_images(3)))
        await asyncio.sleep(0.01)  # queued, waiting for its batch to fill
        await engine.close()
        with pytest.raises(EngineUnavailable, match="shutting down"):
            await engine.classify(distinct_images(1)[0])
        return await pending

    assert len(asyncio.run(main())) == 3


def test_a_client_that_goes_away_costs_no_inference(app_model_dir: Path) -> None:
    metrics = Metrics()

    async def scenario(engine: InferenceEngine):
        abandoned = asyncio.ensure_future(engine.classify(distinct_images(1)[0]))
        await asyncio.sleep(0.01)
        abandoned.cancel()
        await asyncio.sleep(0.15)  # past the batch window
        return await engine.classify(distinct_images(1, seed=1)[0])

    run(scenario, app_model_dir, max_batch_wait_s=0.1, metrics=metrics)
    assert batch_sizes(metrics) == (1, 1)


def test_samples_are_reproducible_and_label_filtered(app_model_dir: Path) -> None:
    async def scenario(engine: InferenceEngine):
        first = await engine.sample(6, seed=11)
        again = await engine.sample(6, seed=11)
        label = int(first.samples[0].prediction.probabilities.argmax())
        filtered = await engine.sample(3, seed=11, label_index=label, max_draws=128)
        return first, again, label, filtered

    first, again, label, filtered = run(scenario, app_model_dir)
    assert first.drawn == 6 and len(first.samples) == 6
    for a, b in zip(first.samples, again.samples, strict=True):
        assert np.array_equal(a.pixels, b.pixels)
    assert filtered.drawn <= 128 and 1 <= len(filtered.samples) <= 3
    assert all(int(s.prediction.probabilities.argmax()) == label for s in filtered.samples)
