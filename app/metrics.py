"""Prometheus metrics: one registry per app, so several apps (tests) never collide in a global registry.

With several server processes (``SGAN_WORKERS`` > 1, app/workers.py) each process counts in its own files under
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, chosen when the library is imported), and a
scrape of /metrics, whichever process takes it, reads all of them: the counts are the whole server's.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Latency buckets from 1 ms to 10 s: a tiny MLP answers in about a millisecond, a large photo decodes in
# tens of milliseconds, and anything past seconds is an outage worth its own bucket.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sgan_http_requests_total",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sgan_http_request_duration_seconds",
            "HTTP request latency by route template, method and status code",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Gauges say how the processes' values combine: the sum over live processes, or their minimum.
        self.in_flight = Gauge(
            "sgan_http_requests_in_flight", "requests being served", registry=self.registry, multiprocess_mode="livesum"
        )
        self.batch_size = Histogram(
            "sgan_inference_batch_size",
            "images per discriminator forward pass (micro-batch size)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "sgan_inference_duration_seconds",
            "time of one forward pass of a micro-batch",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "sgan_inference_queue_depth",
            "images waiting for the inference worker",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.rejected_images = Counter(
            "sgan_rejected_images_total",
            "uploads refused, by HTTP status code",
            ["status"],
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "sgan_model_ready",
            "1 when the model is loaded (in every server process)",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        # Counted per process: with several workers each one swaps, so one replaced directory counts once per worker.
        self.model_reloads = Counter(
            "sgan_model_reloads_total",
            "model directories reloaded after a change on disk, SIGHUP or POST /models/{name}/reload, by model and "
            "outcome: swapped (the new version serves), refused (it failed to load or warm up; the old one serves)",
            ["model", "outcome"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The Prometheus text format: of this app's registry, or of all server processes in multiprocess mode."""
        directory = os.environ.get(MULTIPROCESS_DIR_ENV)
        if not directory:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)


# Hand-written rather than prometheus-fastapi-instrumentator (one more dependency for 30 lines): this one also
# labels the answers given before routing (the body limits' 413s) by their route template.
class MetricsMiddleware:
    """Counts and times every HTTP request by its route *template* (never the raw path: unbounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, known_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.metrics = metrics
        # Answers given before routing (a 413 for a declared oversize body) still count under their route, a
        # template with parameters (/models/{name}/classify) included.
        self.known_paths = known_paths
        self.templates = tuple(
            (re.compile(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path)) + "$"), path)
            for path in sorted(known_paths)
            if "{" in path
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}  # what an exception escaping the app becomes

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        start = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            labels: dict[str, Any] = {
                "route": _route_template(scope, self.known_paths, self.templates),
                "method": scope.get("method", ""),
                "status": str(status["code"]),
            }
            self.metrics.requests.labels(**labels).inc()
            self.metrics.latency.labels(**labels).observe(time.perf_counter() - start)


def _route_template(
    scope: Scope, known_paths: frozenset[str], templates: tuple[tuple[re.Pattern[str], str], ...] = ()
) -> str:
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return template
    path = str(scope.get("path", ""))
    if path in known_paths:
        return path
    for pattern, template in templates:
        if pattern.match(path):
            return template
    # Static files are mounted: report the mount, not each file name.
    return "/static" if path.startswith("/static/") else "unmatched"
