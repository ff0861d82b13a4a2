"""The server's runtime: its settings, the state a request sees (the loaded scorer, the one worker
thread, the queue bound, the store's health as last probed) and the body-size limit."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from mmfs.core.contracts.names import REQUEST_LOG_SUBDIR
from mmfs.serving.metrics import Metrics

log = logging.getLogger("mmfs.serve")


@dataclass(frozen=True)
class ServeSettings:
    """``mmfs serve``'s settings: what to load and the server's limits."""

    checkpoint: str
    root: str  # table root: POST /events lands files under it (unless ``landing``), the served log goes there (unless ``request_log``)
    config: str = "duckdb"  # feature_repo yaml: duckdb (SQLite online) | redis | spark
    repo: str = ""
    max_candidates: int = 2000
    item_cache_size: int = 500_000
    torch_threads: int = 0
    tune_process: bool = True  # tune_for_serving once loaded (mmfs serve owns its process); False when embedded
    max_body_bytes: int = 2 * 1024 * 1024  # larger request bodies are refused (413) before they are parsed
    max_queue: int = 32  # requests waiting for the scoring worker beyond this are shed (503, Retry-After)
    probe_interval_s: float = 2.0  # how often readiness re-checks the online store
    workers: int = 1  # server processes (mmfs serve --workers)
    landing: str = ""  # the event log folder POST /events appends to (default <root>/_landing/events)
    request_log: str = ""  # where the served-feature log is written (default <root>/_served); "off": not logged
    request_log_queue: int = 10_000  # records waiting to be written beyond this are dropped (and counted)


class Shed(Exception):
    """More requests are waiting than the queue bound allows."""


class State:
    """The loaded scorer, the one worker thread that runs scoring and event validation (the event loop
    only awaits it), the queue bound, and the online store's health as last probed."""

    def __init__(self, settings: ServeSettings):
        from concurrent.futures import ThreadPoolExecutor

        self.settings = settings
        self.scorer = None
        self.landing = None  # mmfs.core.events.landing.EventLanding
        self.request_log = None  # mmfs.serving.request_log.RequestLog
        self.load_error: str | None = None
        self.store_error: str | None = None
        # One worker: scoring is CPU-bound torch work on 2 cores, and the SQLite connection and the
        # feedback writer are not meant for concurrent use. The loop never blocks on it.
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmfs-score")
        self.waiting = 0  # requests queued for or running on the worker (touched on the loop only)
        self.metrics = Metrics()
        self.injected = None  # a Scorer given to create_app

    @property
    def ready(self) -> bool:
        """True once the scorer is loaded and the online store answered the last probe."""
        return self.scorer is not None and self.store_error is None

    async def run(self, fn, *args):
        """``fn(*args)`` on the worker; ``Shed`` when ``max_queue`` requests already wait."""
        if self.waiting >= self.settings.max_queue:
            raise Shed()
        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)
        finally:
            self.waiting -= 1

    def probe(self) -> None:
        """Re-check the online store (on the worker, between requests): sets or clears store_error."""
        from mmfs.online.reader import StoreUnavailable, probe_store
        from mmfs.core.contracts.names import USER_SEQUENCE_VIEW as SEQUENCE_VIEW

        try:
            probe_store(self.scorer.reader, SEQUENCE_VIEW)
        except StoreUnavailable as exc:
            if self.store_error is None:
                log.error("online store unavailable: %s", exc)
            self.store_error = str(exc)
            return
        if self.store_error is not None:
            log.info("online store answers again")
        self.store_error = None

    def load(self) -> None:
        """Open the store, load the scorer, the event landing and the served-feature log, then probe the store; a failure is kept in
        ``load_error`` and logged, not raised."""
        from mmfs.store.feast_store import open_store
        from mmfs.core.events.landing import EventLanding
        from mmfs.serving.request_log import RequestLog
        from mmfs.serving.scorer import Scorer, ScorerConfig
        from mmfs.serving.tuning import ProcessTuning, tune_for_serving

        try:
            s = self.settings
            if self.injected is not None:  # the caller built them: nothing is opened here
                scorer, store = self.injected, self.injected.reader.store
            else:
                store = open_store(s.config, s.repo or None, s.root)
                scorer = Scorer.from_checkpoint(s.checkpoint, store, ScorerConfig(max_candidates=s.max_candidates,
                                                                                  item_cache_size=s.item_cache_size))
            if s.tune_process:
                self.blas_limit = tune_for_serving(ProcessTuning(torch_threads=s.torch_threads))
            self.landing = EventLanding(s.root, s.landing or None)
            scorer.follow_changes(Path(s.root))
            if s.request_log != "off":
                self.request_log = RequestLog(Path(s.request_log) if s.request_log else Path(s.root) / REQUEST_LOG_SUBDIR,
                                              scorer, s.request_log_queue, self.metrics)
            self.scorer = scorer
            self.probe()  # a store that is missing or empty at start-up is not ready
            self.metrics.ready.set(1)
            log.info("loaded: %s on %s (%s online store)%s", scorer.meta["config"]["model"]["name"], scorer.feature_service,
                     store.config.online_store.type, "" if self.store_error is None else f"; not ready: {self.store_error}")
        except Exception as exc:  # noqa: BLE001 - reported by /ready and the log, the server stays up
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("loading failed: %s", self.load_error)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 before it is parsed,
    whether it declares its length or streams it."""

    def __init__(self, app, limit: int, on_refused):
        self.app, self.limit, self.on_refused = app, limit, on_refused

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, send)
        # Read the body first (at most ``limit`` bytes are ever held), then hand it on.
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return await self._refuse(scope, send)
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed():
            return next(replay, None) or await receive()

        return await self.app(scope, replayed, send)

    async def _refuse(self, scope, send):
        self.on_refused(scope.get("path", ""))
        body = b'{"detail":"request body over the limit of %d bytes"}' % self.limit
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class ScoreFastPath:
    """ASGI middleware: the scoring routes (``POST /score``, ``/score/batch``) answered here, before
    FastAPI's request machinery. The body is parsed and validated in one pass by pydantic's compiled
    JSON validator (``model.model_validate_json``), then handed to the route's answer (the same
    function FastAPI's documented route calls); errors are FastAPI's 422 body (``invalid(endpoint,
    errors)``, each field named ``body.<field>``). On 2 cores, FastAPI's dependency solving, its
    stdlib JSON parse and the second validation pass were a fifth of the event loop's time per request.
    ``routes``: path -> (pydantic request model, async answer(parsed request) -> ASGI response)."""

    def __init__(self, app, routes: dict, invalid):
        self.app, self.routes, self.invalid = app, routes, invalid

    async def __call__(self, scope, receive, send):
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            return await self.app(scope, receive, send)
        from pydantic import ValidationError

        model, answer = route
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            request = model.model_validate_json(b"".join(chunks))
        except ValidationError as exc:
            response = self.invalid(scope["path"], [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)])
        else:
            response = await answer(request)
        await response(scope, receive, send)
