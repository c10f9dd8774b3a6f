"""Several server processes on one port (``SGAN_WORKERS``), each with its own model, micro-batcher and listening
socket.

One process serves at most about one core of Python (the event loop holds the GIL), so on a machine with more
cores than torch needs, more processes answer more requests. Each worker binds the port with SO_REUSEPORT and
the kernel spreads new connections evenly across them. uvicorn's own ``--workers`` shares one socket instead,
and under a burst of new connections one process accepts nearly all of them: with 2 workers on 2 cores and 64
connections it measured no faster than one worker (2,192 vs 2,285 requests/s), against 1.95x with SO_REUSEPORT
(benchmarks/results/serving.md). Its socket also lacks TCP_NODELAY under the asyncio loop (52 ms per answer at
concurrency 1, as Nagle's algorithm gives); ours is created as an IPPROTO_TCP socket, on whose connections
asyncio sets it (uvloop always does).

The parent only supervises: it forwards SIGTERM/SIGINT once to every worker (each then shuts down gracefully,
letting its in-flight requests finish), forwards every SIGHUP (each worker then looks for replaced models at once,
app/registry.py), and if a worker dies on its own it stops the others and exits non-zero,
so that a supervisor above it (Docker's restart policy) starts afresh. The workers share one metrics directory
(prometheus-client's multiprocess mode, app/metrics.py), made fresh for each start and removed at the end, so a
scrape of /metrics answers for the whole server whichever worker takes the connection.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from multiprocessing.connection import wait
from typing import Any

import uvicorn

from app.metrics import MULTIPROCESS_DIR_ENV

logger = logging.getLogger(__name__)

LISTEN_BACKLOG = 2048  # uvicorn's default
WORKER_NAME = "sgan-worker"


def reuseport_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other processes may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on connections of a socket that says so.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _worker_main(options: dict[str, Any], log_format: str) -> None:
    # A process group of its own: a terminal's Ctrl-C reaches only the parent, which forwards it once (a second
    # SIGINT would make uvicorn abandon the requests in flight).
    os.setpgrp()
    # Until the app's lifespan takes SIGHUP over (a reload), one forwarded early must not kill the worker.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(level=str(options["log_level"]).upper(), format=log_format)
    sock = listening_socket(options["host"], options["port"])
    # The app is built in this process from the SGAN_* environment the parent prepared (get_settings).
    config = uvicorn.Config("app.main:create_app", factory=True, **options)
    uvicorn.Server(config).run(sockets=[sock])


def serve_workers(workers: int, options: dict[str, Any], log_format: str) -> int:
    """Run ``workers`` uvicorn processes with uvicorn ``options`` until they stop; the exit status."""
    context = multiprocessing.get_context("spawn")  # no forked torch state: each worker starts clean
    processes = [
        context.Process(target=_worker_main, args=(options, log_format), name=f"{WORKER_NAME}-{index}")
        for index in range(workers)
    ]
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    def forward_reload(signum: int, frame: object) -> None:
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGHUP)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, forward_reload)
    # Set before the workers start: prometheus-client picks its multiprocess mode when a worker imports it. A
    # directory of our own, never one left by an earlier run, whose counts would be added in.
    metrics_dir = tempfile.mkdtemp(prefix="sgan-metrics-")
    previous_metrics_dir = os.environ.get(MULTIPROCESS_DIR_ENV)
    os.environ[MULTIPROCESS_DIR_ENV] = metrics_dir
    try:
        for process in processes:
            process.start()
        logger.info("started %d worker processes on %s:%s", workers, options["host"], options["port"])
        wait([process.sentinel for process in processes])  # the first one to end
        crashed = not stopping
        if crashed:
            logger.error("a worker process exited on its own: stopping the others")
            forward(signal.SIGTERM, None)
        for process in processes:
            process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if previous_metrics_dir is None:
            os.environ.pop(MULTIPROCESS_DIR_ENV, None)
        else:
            os.environ[MULTIPROCESS_DIR_ENV] = previous_metrics_dir
        shutil.rmtree(metrics_dir, ignore_errors=True)
    clean = all(process.exitcode in (0, -signal.SIGTERM, -signal.SIGINT) for process in processes)
    return 0 if clean and not crashed else 1


def signal_sibling_workers() -> bool:
    """In a worker of ``serve_workers``: SIGHUP the supervisor, which forwards it to every worker, so that all of
    them look for replaced models now (POST /models/{name}/reload reaches one worker only). False elsewhere."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None or not multiprocessing.current_process().name.startswith(WORKER_NAME):
        return False
    os.kill(parent.pid, signal.SIGHUP)
    return True
