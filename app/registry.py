"""The models a server process serves, by name, and their replacement without a restart (docs/design.md, Models
and live reload).

A model is a *slot*: a name and a model directory. The default slot is ``SGAN_MODEL_DIR`` (or the bundled model),
and each sub-folder of ``SGAN_MODELS_DIR`` adds one more. A slot serves one *version* at a time, a
``ServedModel``: the engine of one load of that directory.

Live swap. Every ``SGAN_RELOAD_POLL_S`` the registry looks at each directory's files (inode, size and mtime of
the card and the weights); a directory that changed and then held still for one more poll is loaded *beside*
the version serving, warmed up, and swapped in with one assignment. Requests hold the version they started on
(``lease``) until they are answered, so none sees two models, and the old version's engine closes once its last
request is done. A directory that fails to load or to warm up is refused: the old version keeps serving, the
refusal is logged and counted, and the same files are not tried again. SIGHUP, and POST /models/{name}/reload,
look at once instead of waiting for the next poll.

Each server process has its own registry: with several workers each one notices and swaps by itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.backends import load_for_serving, weights_bytes
from app.engine import InferenceEngine, TorchThread
from app.metrics import Metrics
from app.settings import Settings
from model import ModelCard
from model.directory import CARD_FILE, DISCRIMINATOR_FILE, GENERATOR_FILE

logger = logging.getLogger(__name__)

# A folder name that is safe in a URL path segment and a metric label. Dot-folders are skipped on purpose: the
# trainer's atomic write stages ".NAME.staging-*" and retires ".NAME.retired-*" beside the destination.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

# (inode, size, mtime in ns) of the directory, its card and its weight files; None: no such directory.
Signature = tuple[tuple[int, int, int], ...]

ReloadOutcome = Literal["loaded", "swapped", "refused", "changed", "unchanged"]


def directory_signature(path: Path) -> Signature | None:
    """What a replacement changes: the trainer's atomic rename changes every inode, a copy over the files
    their mtimes. Four stat calls: cheap enough to poll every second."""
    try:
        stats = [os.stat(path)]
    except OSError:
        return None
    for name in (CARD_FILE, DISCRIMINATOR_FILE, GENERATOR_FILE):
        try:
            stats.append(os.stat(path / name))
        except OSError:
            stats.append(os.stat_result((0,) * 10))  # a missing file: the load will say which
    return tuple((stat.st_ino, stat.st_size, stat.st_mtime_ns) for stat in stats)


class ModelUnavailable(RuntimeError):
    """A slot with no version serving (still loading, or its directory failed to load): 503 with the reason."""


class ServedModel:
    """One loaded version of a model directory: its engine, and how many requests hold it.

    A request holds the version it started on until it is answered (``acquire``, ``release``), so a swap never
    changes the model under a request. A retired version closes its engine (finishing what is queued) once its
    last request is done.
    """

    def __init__(self, engine: InferenceEngine, path: Path, weights_bytes: int) -> None:
        self.engine = engine
        self.card: ModelCard = engine.card
        self.path = path
        self.weights_bytes = weights_bytes
        self.loaded_at = time.time()
        self._users = 0
        self._retired = False
        self._closing: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    @property
    def model_id(self) -> str:
        return self.card.model_id

    def acquire(self) -> ServedModel:
        self._users += 1
        return self

    def release(self) -> None:
        self._users -= 1
        if self._retired and self._users == 0:
            self._close()

    def retire(self) -> None:
        """No new request will get this version; close it once the requests holding it are answered."""
        self._retired = True
        if self._users == 0:
            self._close()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close_now(self) -> None:
        """Close the engine whether or not requests still hold it (at shutdown, once uvicorn has drained them)."""
        self._close()
        await self._closed.wait()

    def _close(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_engine())

    async def _close_engine(self) -> None:
        try:
            await self.engine.close()
        finally:
            self._closed.set()


@dataclass(eq=False)
class ModelSlot:
    """A name, its model directory, and the version serving it (None until one loads)."""

    name: str
    path: Path
    default: bool = False
    current: ServedModel | None = None
    error: str | None = "the model is still loading"  # why no version serves, when none does
    last_refusal: str | None = None  # why the last replacement was refused, while an older version serves
    reloads: int = 0
    refusals: int = 0
    attempted: Signature | None = None  # the files of the last load, successful or not: not tried twice
    seen: Signature | None = None  # the files at the last poll: a change is loaded once it holds still
    missing_polls: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def status(self) -> Literal["ready", "loading", "error"]:
        if self.current is not None:
            return "ready"
        return "loading" if self.attempted is None else "error"


class ModelRegistry:
    """The slots of one server process, their loading, polling and swapping. All methods run on the event loop."""

    def __init__(
        self, settings: Settings, metrics: Metrics, on_default_change: Callable[[ModelSlot], None] | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._on_default_change = on_default_change or (lambda slot: None)
        path = settings.resolved_model_dir
        self.default = ModelSlot(path.name or "default", path, default=True)
        self._slots: dict[str, ModelSlot] = {self.default.name: self.default}
        # One torch thread for every model and version: a process never runs two forward passes at once.
        self._torch_thread = TorchThread(settings.torch_threads)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retired: set[ServedModel] = set()
        self._warned: set[str] = set()
        self._sighup = False

    # ------------------------------------------------------------------ lookup

    def get(self, name: str) -> ModelSlot | None:
        return self._slots.get(name)

    def slots(self) -> list[ModelSlot]:
        """The default first, then by name."""
        return [self.default, *sorted((s for s in self._slots.values() if not s.default), key=lambda s: s.name)]

    def lease(self, slot: ModelSlot) -> ServedModel:
        """The version serving ``slot`` now, held for one request: ``release()`` it when answered."""
        served = slot.current
        if served is None:
            raise ModelUnavailable(f"model {slot.name!r} not ready: {slot.error}")
        return served.acquire()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load every model (the default first; one that fails is listed with its error), then start watching."""
        await self._torch_thread.start()
        self._scan_models_dir(now=True)
        for slot in self.slots():
            slot.seen = directory_signature(slot.path)
            await self.reload(slot)
        if self.settings.reload_poll_s > 0:
            self._spawn(self._poll_forever())
        self._install_sighup()

    async def close(self) -> None:
        """Stop watching, retire every version and wait for their engines to close."""
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for slot in self._slots.values():
            if slot.current is not None:
                self._retire(slot.current)
                slot.current = None
            slot.error = "the server is shutting down"
        self._on_default_change(self.default)
        await asyncio.gather(*(served.close_now() for served in list(self._retired)), return_exceptions=True)
        self._torch_thread.close()

    # ------------------------------------------------------------------ reload

    async def reload(self, slot: ModelSlot, *, force: bool = True) -> ReloadOutcome:
        """Load ``slot``'s directory beside the version serving, warm it up and swap it in; on failure refuse it
        and keep the old version. Without ``force``, files already tried are left alone (``unchanged``).
        ``changed``: the files changed while loading (a copy in progress): not a refusal, the next look tries
        again."""
        async with slot.lock:
            before = directory_signature(slot.path)
            if not force and before == slot.attempted:
                return "unchanged"  # another look loaded these files while this one waited for the lock
            first = slot.attempted is None
            try:
                candidate = await self._load(slot.path)
            except Exception as exc:  # any failure to load or warm up: the old version must keep serving
                return self._refuse(slot, before, exc, first)
            if self._slots.get(slot.name) is not slot:  # unloaded while this version loaded
                self._retire(candidate)
                return "changed"
            slot.attempted = before
            old, slot.current = slot.current, candidate
            slot.error = slot.last_refusal = None
            if old is not None:
                self._retire(old)
            if first:
                logger.info("model %r: %s loaded from %s", slot.name, candidate.model_id, slot.path)
            else:
                slot.reloads += 1
                self.metrics.model_reloads.labels(model=slot.name, outcome="swapped").inc()
                previous = old.model_id if old is not None else "none"
                logger.info("model %r: swapped %s -> %s from %s", slot.name, previous, candidate.model_id, slot.path)
            if slot.default:
                self._on_default_change(slot)
            return "loaded" if first else "swapped"

    async def _load(self, path: Path) -> ServedModel:
        settings = self.settings
        loaded, classifier = await asyncio.to_thread(load_for_serving, path, settings.backend, settings.torch_threads)
        engine = InferenceEngine(
            loaded,
            max_batch_size=settings.max_batch_size,
            max_batch_wait_s=settings.max_batch_wait_ms / 1000.0,
            max_queue=settings.max_queue,
            metrics=self.metrics,
            torch_thread=self._torch_thread,
            classifier=classifier,
        )
        await engine.start()
        try:
            # A forward pass of each network before taking traffic: the first user does not pay for lazy set-up,
            # and a card that does not match its weights is refused here, not on every request.
            await engine.classify(np.zeros(loaded.card.image_shape, dtype=np.uint8))
            await engine.sample(1, seed=0)
        except BaseException:
            await engine.close()
            raise
        return ServedModel(engine, path, weights_bytes(loaded))

    def _refuse(self, slot: ModelSlot, before: Signature | None, exc: Exception, first: bool) -> ReloadOutcome:
        message = f"cannot load the model from {slot.path}: {exc}"
        if slot.current is None:
            slot.error = message
            if slot.default:
                self._on_default_change(slot)
        if directory_signature(slot.path) != before:
            logger.info("model %r: %s changed while loading; trying again once it holds still", slot.name, slot.path)
            return "changed"
        slot.attempted = before
        if first:
            logger.error("model %r: %s", slot.name, message)
        else:
            slot.refusals += 1
            slot.last_refusal = message
            self.metrics.model_reloads.labels(model=slot.name, outcome="refused").inc()
            serving = slot.current.model_id if slot.current is not None else "nothing"
            logger.warning("model %r: refused the new directory, still serving %s: %s", slot.name, serving, message)
        return "refused"

    def _retire(self, served: ServedModel) -> None:
        self._retired.add(served)
        served.retire()
        self._spawn(self._forget_when_closed(served))

    async def _forget_when_closed(self, served: ServedModel) -> None:
        await served.wait_closed()  # once the last request holding it is answered
        self._retired.discard(served)

    # ------------------------------------------------------------------ watching

    async def check(self, *, now: bool = False) -> None:
        """One look at the disk: load new, replaced and removed model directories. A change is acted on once it
        has held still for a poll (a copy in progress is not loaded half-way); ``now`` acts on it at once."""
        self._scan_models_dir(now=now)
        for slot in list(self._slots.values()):
            signature = directory_signature(slot.path)
            settled = now or signature == slot.seen
            slot.seen = signature
            if signature is not None and signature != slot.attempted and settled:
                await self.reload(slot, force=False)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_poll_s)
            try:
                await self.check()
            except Exception:  # a bug in one look must not stop the watching
                logger.exception("looking for replaced models failed")

    def _scan_models_dir(self, *, now: bool) -> None:
        """Add a slot for each new sub-folder of SGAN_MODELS_DIR; drop one whose folder is gone (for two looks
        in a row, or at once with ``now``: the trainer's swap leaves a folder missing for an instant)."""
        folder = self.settings.models_dir
        if folder is None:
            return
        try:
            entries = [entry for entry in os.scandir(folder) if not entry.name.startswith(".") and entry.is_dir()]
        except OSError as exc:
            self._warn_once(f"folder:{exc}", "cannot read SGAN_MODELS_DIR %s: %s", folder, exc)
            return
        found = {}
        for entry in entries:
            if not MODEL_NAME.fullmatch(entry.name):
                self._warn_once(entry.name, "skipping %s: a model's folder name must match %s", entry.path, MODEL_NAME)
            else:
                found[entry.name] = Path(entry.path)
        for name, path in found.items():
            slot = self._slots.get(name)
            if slot is None:
                self._slots[name] = ModelSlot(name, path)
            elif slot.path.resolve() != path.resolve():
                self._warn_once(name, "skipping %s: the name %r is the default model's (%s)", path, name, slot.path)
        for name, slot in list(self._slots.items()):
            slot.missing_polls = 0 if slot.default or name in found else slot.missing_polls + 1
            if slot.missing_polls >= (1 if now else 2):
                self._unload(slot)

    def _unload(self, slot: ModelSlot) -> None:
        del self._slots[slot.name]
        if slot.current is not None:
            logger.info("model %r: %s removed, unloading %s", slot.name, slot.path, slot.current.model_id)
            self._retire(slot.current)
            slot.current = None
        slot.error = "the model directory was removed"

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    def _install_sighup(self) -> None:
        # A loop signal handler only works in the main thread (not under TestClient) and not on Windows.
        if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
            return
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
            self._sighup = True
        except (NotImplementedError, RuntimeError, ValueError):
            pass

    def _on_sighup(self) -> None:
        logger.info("SIGHUP: looking at the model directories now")
        self._spawn(self.check(now=True))

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
