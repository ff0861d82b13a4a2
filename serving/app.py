"""``mmfs serve``: the scorer over HTTP (FastAPI).

    mmfs serve --checkpoint out/movielens/models/dmf/checkpoint.pt --root out/movielens [--config redis]

Endpoints: ``POST /score`` (one user, up to ``--max-candidates`` items), ``POST /events`` (feedback:
impressions and clicks, seen by the next score), ``GET /health`` (the process is up),
``GET /ready`` (model and store loaded; 503 before, or while the online store fails),
``GET /metrics`` (Prometheus text: requests, latency histogram, errors, stale features), and the
OpenAPI schema at ``/docs``. It binds 127.0.0.1 unless told otherwise. The model and store load in
the background after start-up, so ``/health`` answers at once and ``/ready`` says when to send
traffic. No request field names a file: the checkpoint and the store come from the command line.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt

log = logging.getLogger("mmfs.serve")

MAX_EVENTS = 10_000


@dataclass(frozen=True)
class ServeSettings:
    checkpoint: str
    root: str  # table root (feedback files are appended here)
    config: str = "duckdb"  # feature_repo yaml: duckdb (SQLite online) | redis | spark
    repo: str = ""
    max_candidates: int = 2000
    item_cache_size: int = 500_000
    torch_threads: int = 0


# -- request / response models ----------------------------------------------------------------------

class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: StrictInt
    item_ids: list[StrictInt] = Field(min_length=1, description="candidate item ids, at most the server's max_candidates")
    at: AwareDatetime | None = Field(None, description="score as of this time (replays, tests); default now")


class ItemScoreOut(BaseModel):
    item_id: int
    score: float | None = Field(description="click probability; null with an error")
    flags: list[str] = Field(description="new_item, no_embedding, no_item_stats, stale:<view>")
    error: str | None = None


class ScoreResponse(BaseModel):
    user_id: int
    feature_service: str
    model: str
    items: list[ItemScoreOut]
    user_flags: list[str] = Field(description="no_sequence (cold start), stale:user_sequence, no_user_stats (no event before)")
    history_len: int
    stale_features: int
    timings_ms: dict[str, float]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: StrictInt
    item_id: StrictInt
    label: Literal[0, 1]
    event_timestamp: AwareDatetime


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    events: int
    users: int
    items: int
    snapshots: int


# -- metrics ----------------------------------------------------------------------------------------

class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("mmfs_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("mmfs_score_latency_seconds", "POST /score latency (server side)",
                                 buckets=(.001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .1, .25, .5, 1, 2.5),
                                 registry=self.registry)
        self.errors = Counter("mmfs_errors", "requests that failed", ["endpoint", "kind"], registry=self.registry)
        self.stale = Counter("mmfs_stale_features", "feature values older than their TTL, flagged in responses", registry=self.registry)
        self.item_errors = Counter("mmfs_item_errors", "candidates answered with an error entry", registry=self.registry)
        self.ready = Gauge("mmfs_ready", "1 when the model and store are loaded", registry=self.registry)
        self.cache_hits = Gauge("mmfs_item_cache_hits", "item feature cache hits", registry=self.registry)
        self.cache_misses = Gauge("mmfs_item_cache_misses", "item feature cache misses", registry=self.registry)


class State:
    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.scorer = None
        self.feedback = None
        self.load_error: str | None = None
        self.store_error: str | None = None
        self.lock = threading.Lock()  # one scoring or feedback call at a time (SQLite, torch threads)
        self.metrics = Metrics()

    @property
    def ready(self) -> bool:
        return self.scorer is not None and self.store_error is None

    def load(self) -> None:
        from pipelines.feast_store import REPO, open_store
        from serving.feedback import FeedbackWriter
        from serving.scorer import Scorer, ScorerConfig

        try:
            s = self.settings
            store = open_store(s.config, s.repo or REPO, s.root)
            scorer = Scorer.from_checkpoint(s.checkpoint, store, ScorerConfig(
                max_candidates=s.max_candidates, item_cache_size=s.item_cache_size, torch_threads=s.torch_threads))
            views = {p.name for p in store.get_feature_service(scorer.feature_service).feature_view_projections}
            self.feedback = FeedbackWriter(store, s.root, scorer.reader if "item_stats" in views else None)
            self.scorer = scorer
            self.metrics.ready.set(1)
            log.info("ready: %s on %s (%s online store)", scorer.meta["config"]["model"]["name"], scorer.feature_service,
                     store.config.online_store.type)
        except Exception as exc:  # noqa: BLE001 - reported by /ready and the log, the server stays up
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("loading failed: %s", self.load_error)


def create_app(settings: ServeSettings, load_in_background: bool = True) -> FastAPI:
    state = State(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = threading.Thread(target=state.load, name="mmfs-load", daemon=True)
        loader.start()
        if not load_in_background:
            await asyncio.to_thread(loader.join)
        yield
        state.metrics.ready.set(0)
        state.scorer = None  # nothing else to release: the online store connections close with the process

    app = FastAPI(title="mmfs scorer", version="1", lifespan=lifespan,
                  description="Scores one user's candidates with the checkpoint's feature service from the Feast online store.")
    app.state.mmfs = state

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        endpoint = request.url.path
        state.metrics.requests.labels(endpoint, "422").inc()
        state.metrics.errors.labels(endpoint, "invalid_request").inc()
        detail = [{"field": ".".join(str(p) for p in e["loc"]), "error": e["msg"]} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.get("/health")
    def health():
        state.metrics.requests.labels("/health", "200").inc()
        return {"status": "ok"}

    @app.get("/ready")
    def ready():
        if state.ready:
            state.metrics.requests.labels("/ready", "200").inc()
            return {"ready": True, "feature_service": state.scorer.feature_service}
        state.metrics.requests.labels("/ready", "503").inc()
        return JSONResponse(status_code=503, content={"ready": False, "reason": state.load_error or state.store_error or "loading"})

    @app.get("/metrics")
    def metrics():
        if state.scorer is not None:
            state.metrics.cache_hits.set(state.scorer.cache.hits)
            state.metrics.cache_misses.set(state.scorer.cache.misses)
        return PlainTextResponse(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def scorer_or_503():
        if state.scorer is None:
            raise HTTPException(status_code=503, detail=state.load_error or "the model and store are still loading")
        return state.scorer

    @app.post("/score", response_model=ScoreResponse)
    async def score(request: ScoreRequest):
        # Runs on the event loop: scoring is a few ms of CPU, and one request at a time is what 2
        # cores can do anyway; a thread hop per request cost more than it bought.
        from serving.scorer import BadRequest

        began = time.perf_counter()
        try:
            scorer = scorer_or_503()
            if len(request.item_ids) > settings.max_candidates:
                raise HTTPException(status_code=413, detail=f"{len(request.item_ids)} candidates is more than the limit of {settings.max_candidates}")
            with state.lock:
                try:
                    result = scorer.score(request.user_id, request.item_ids, now=request.at)
                except BadRequest as exc:
                    raise HTTPException(status_code=422, detail=str(exc)) from exc
                except Exception as exc:  # noqa: BLE001 - the online store failed: not ready until it answers again
                    state.store_error = f"{type(exc).__name__}: {exc}"
                    raise HTTPException(status_code=503, detail=f"online store error: {state.store_error}") from exc
                state.store_error = None
        except HTTPException as exc:
            state.metrics.requests.labels("/score", str(exc.status_code)).inc()
            state.metrics.errors.labels("/score", str(exc.status_code)).inc()
            raise
        state.metrics.latency.observe(time.perf_counter() - began)
        state.metrics.requests.labels("/score", "200").inc()
        state.metrics.stale.inc(result.stale_features)
        state.metrics.item_errors.inc(sum(1 for i in result.items if i.error))
        # Built as plain JSON (the shape ScoreResponse documents): validating 1,200 item models again
        # on the way out cost more than the scoring's own feature reads.
        return JSONResponse({"user_id": result.user_id, "feature_service": result.feature_service, "model": scorer.model_name,
                             "items": [{"item_id": i.item_id, "score": i.score, "flags": i.flags, "error": i.error} for i in result.items],
                             "user_flags": result.user_flags, "history_len": result.history_len, "stale_features": result.stale_features,
                             "timings_ms": result.timings_ms})

    @app.post("/events", response_model=EventsResponse)
    def events(request: EventsRequest):
        from serving.feedback import Event, FeedbackError

        scorer = scorer_or_503()
        batch = [Event(e.user_id, e.item_id, e.event_timestamp.astimezone(dt.timezone.utc), e.label) for e in request.events]
        try:
            with state.lock:
                done = state.feedback.record(batch)
                for item in {e.item_id for e in batch}:
                    scorer.invalidate_item(item)
        except FeedbackError as exc:
            state.metrics.requests.labels("/events", "409").inc()
            state.metrics.errors.labels("/events", "409").inc()
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        state.metrics.requests.labels("/events", "200").inc()
        return EventsResponse(**{k: done[k] for k in ("events", "users", "items")}, snapshots=done.get("snapshots", 0))

    return app


def main(argv: list[str] | None = None) -> int:
    """``mmfs serve``."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="mmfs serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--root", required=True, help="table root the pipeline wrote (the feedback path appends here)")
    parser.add_argument("--config", default="duckdb", help="feature_repo config: duckdb (SQLite online store), redis, spark")
    parser.add_argument("--repo", default="")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-candidates", type=int, default=2000)
    parser.add_argument("--item-cache-size", type=int, default=500_000)
    parser.add_argument("--torch-threads", type=int, default=0)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(ServeSettings(checkpoint=args.checkpoint, root=args.root, config=args.config, repo=args.repo,
                                   max_candidates=args.max_candidates, item_cache_size=args.item_cache_size,
                                   torch_threads=args.torch_threads))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
