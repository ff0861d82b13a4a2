"""``mmfs serve``: the scorer over HTTP (FastAPI).

    mmfs serve --checkpoint out/movielens/models/dmf/checkpoint.pt --root out/movielens [--config redis]

Endpoints: ``POST /score`` (one user, up to ``--max-candidates`` items; what it used is written to
the served-feature log, ``mmfs.serving.request_log``), ``POST /events`` (impressions and clicks: checked
with ingest's rules and appended to the event log's landing folder, 202; ``mmfs stream`` applies
them, and the score after its next micro-batch sees them), ``GET /health`` (the process is up),
``GET /ready`` (model and store loaded; 503 before, or while the online store fails),
``GET /metrics`` (Prometheus text: requests, latency histogram, errors by kind, stale features), and
the API's docs at ``/docs`` (a self-contained page; ``/openapi.json``). It binds 127.0.0.1 unless
told otherwise. The model and store load in the background after start-up, so ``/health`` answers
at once and ``/ready`` says when to send traffic. No request field names a file: the checkpoint and
the store come from the command line.

Failure behaviour: scoring and event validation run on one worker thread, so the event loop (``/health``,
``/ready``) never waits on them; past ``--max-queue`` waiting requests the server sheds load with
503 and ``Retry-After``. A client's mistake is a 4xx naming the field (ids outside int64, a time
that is not an ISO string with a zone or lies outside what the store holds, a body over
``--max-body-bytes``) and never touches readiness. Only a failing online store is a 503; readiness
re-probes the store every ``probe_interval_s`` and comes back on its own (SQLite: a missing file is
reported as missing, never created; a replaced file is reopened). Error bodies carry no internal
text: the log does.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mmfs.serving.api import (EventsRequest, EventsResponse, ScoreArraysResponse, ScoreBatchRequest, ScoreBatchResponse, ScoreRequest,
                              ScoreResponse, offline_docs, score_body)
from mmfs.serving.runtime import BodyLimit, ScoreFastPath, ServeSettings, Shed, State

log = logging.getLogger("mmfs.serve")

def create_app(settings: ServeSettings, load_in_background: bool = True, scorer=None) -> FastAPI:
    """The HTTP app over ``settings``. By default it opens the store and loads the checkpoint itself
    (``mmfs serve``); given a ``mmfs.serving.scorer.Scorer``, it serves that one and opens nothing
    (``settings.checkpoint``, ``config`` and ``repo`` are then unused; ``root`` still takes events and the log)."""
    state = State(settings)
    state.injected = scorer

    async def probe_forever():
        while True:
            await asyncio.sleep(settings.probe_interval_s)
            if state.scorer is not None:
                try:  # on the worker, so it never races a request on the store connection
                    await asyncio.get_running_loop().run_in_executor(state.worker, state.probe)
                except Exception:  # noqa: BLE001 - a probe that itself failed says nothing new; try again later
                    log.exception("store probe failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = threading.Thread(target=state.load, name="mmfs-load", daemon=True)
        loader.start()
        if not load_in_background:
            await asyncio.to_thread(loader.join)
        prober = asyncio.create_task(probe_forever())
        yield
        prober.cancel()
        if state.request_log is not None:
            await asyncio.to_thread(state.request_log.close)
        state.metrics.ready.set(0)
        state.scorer = None
        state.worker.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="mmfs scorer", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Scores one user's candidates with the checkpoint's feature service from the Feast online store.")
    app.state.mmfs = state

    def count(endpoint: str, status: int, kind: str | None = None) -> None:
        state.metrics.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            state.metrics.errors.labels(endpoint, kind or str(status)).inc()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return invalid_request(request.url.path, exc.errors())

    def invalid_request(endpoint: str, errors) -> JSONResponse:
        """422 naming each bad field as ``body.<field>`` (pydantic's errors)."""
        count(endpoint, 422, "invalid_request")
        detail = [{"field": ".".join(str(p) for p in e["loc"]), "error": e["msg"]} for e in errors]
        return JSONResponse(status_code=422, content={"detail": detail})

    def refuse(endpoint: str, status: int, detail: str, kind: str | None = None, retry_after: int | None = None):
        count(endpoint, status, kind)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)

    _status_routes(app, state, count)
    app.add_middleware(ScoreFastPath, routes=_model_routes(app, state, count, refuse), invalid=invalid_request)
    # added last, so outermost: a body over the limit is refused before anything reads it
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, on_refused=lambda path: count(path, 413, "body_too_large"))
    return app


def _status_routes(app: FastAPI, state: State, count) -> None:
    """/health, /ready, /metrics and /docs: answered on the event loop, never behind the worker."""
    @app.get("/health")
    async def health():
        count("/health", 200)
        return {"status": "ok", "pid": os.getpid()}  # which --workers process answered

    @app.get("/ready")
    async def ready():
        if state.ready:
            count("/ready", 200)
            return {"ready": True, "feature_service": state.scorer.feature_service}
        reason = "loading failed (see the server log)" if state.load_error else "online store unavailable" if state.store_error else "loading"
        count("/ready", 503, "not_ready")
        return JSONResponse(status_code=503, content={"ready": False, "reason": reason})

    @app.get("/metrics")
    async def metrics():
        if state.scorer is not None:
            state.metrics.cache_hits.set(state.scorer.cache.hits)
            state.metrics.cache_misses.set(state.scorer.cache.misses)
            state.metrics.user_cache_hits.set(state.scorer.user_cache.hits)
            state.metrics.user_cache_misses.set(state.scorer.user_cache.misses)
        return PlainTextResponse(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/docs", response_class=HTMLResponse)
    async def docs():
        return HTMLResponse(offline_docs(app.openapi()))



def _model_routes(app: FastAPI, state: State, count, refuse):
    """/score, /score/batch and /events: run on the worker, the client's mistakes mapped to 4xx.
    Returns the scoring routes for ``ScoreFastPath``: path -> (request model, answer for a parsed request)."""
    settings = state.settings

    async def on_worker(endpoint: str, fn, *args, needs_store: bool = True):
        """Run ``fn`` on the worker and map what it raises: the client's mistakes are 4xx, a failing
        store 503 (and not ready until a probe finds it back), anything else 500. No internal
        text goes back; the log has it. ``needs_store=False`` (landing events, which writes a file
        and never reads the store) runs whatever the online store's state."""
        from mmfs.core.events.landing import InvalidEvents
        from mmfs.online.reader import store_errors
        from mmfs.serving.scorer import BadRequest

        if (state.scorer if needs_store else state.landing) is None:
            return None, refuse(endpoint, 503, "the model and store are still loading" if not state.load_error else
                                "the model could not be loaded (see the server log)", "not_ready", retry_after=5)
        if needs_store and state.store_error is not None:
            return None, refuse(endpoint, 503, "online store unavailable", "store", retry_after=int(settings.probe_interval_s) or 1)
        try:
            return await state.run(fn, *args), None
        except Shed:
            return None, refuse(endpoint, 503, f"overloaded: more than {settings.max_queue} requests waiting", "shed", retry_after=1)
        except BadRequest as exc:
            return None, refuse(endpoint, 422, str(exc), "invalid_request")
        except InvalidEvents as exc:  # ingest's rules, each broken one named
            count(endpoint, 422, "invalid_event")
            return None, JSONResponse(status_code=422, content={"detail": exc.problems})
        except store_errors() as exc:
            state.store_error = f"{type(exc).__name__}: {exc}"
            log.error("%s: online store error: %s", endpoint, state.store_error)
            return None, refuse(endpoint, 503, "online store unavailable", "store", retry_after=int(settings.probe_interval_s) or 1)
        except Exception:  # noqa: BLE001 - a bug: logged with its trace, answered without it
            log.exception("%s failed", endpoint)
            return None, refuse(endpoint, 500, "internal error (see the server log)", "internal")

    async def answer_score(request: ScoreRequest) -> Response:
        """/score's answer: scored and encoded on the worker (the event loop only awaits it)."""
        began = time.perf_counter()
        if len(request.item_ids) > settings.max_candidates:
            return refuse("/score", 413, f"{len(request.item_ids)} candidates is more than the limit of {settings.max_candidates}")

        def scored():
            result = state.scorer.score(request.user_id, request.item_ids, now=request.at)
            return result, score_body(result, state.scorer.model_name, request.format)

        done, error = await on_worker("/score", scored)
        if error is not None:
            return error
        result, body = done
        state.metrics.latency.observe(time.perf_counter() - began)
        count("/score", 200)
        state.metrics.stale.inc(result.stale_features)
        state.metrics.item_errors.inc(len(result.errors))
        return Response(body, media_type="application/json")

    async def answer_batch(batch: ScoreBatchRequest) -> Response:
        """/score/batch's answer: every request scored and encoded in one trip to the worker; a
        request the scorer refuses makes the whole batch a 4xx naming it (``requests[i]``)."""
        from mmfs.serving.scorer import BadRequest

        for i, request in enumerate(batch.requests):
            if len(request.item_ids) > settings.max_candidates:
                return refuse("/score/batch", 413, f"requests[{i}]: {len(request.item_ids)} candidates is more than the limit of "
                                                   f"{settings.max_candidates}")

        def scored():
            results, bodies = [], []
            for i, request in enumerate(batch.requests):
                try:
                    result = state.scorer.score(request.user_id, request.item_ids, now=request.at)
                except BadRequest as exc:
                    raise BadRequest(f"requests[{i}]: {exc}") from exc
                results.append(result)
                bodies.append(score_body(result, state.scorer.model_name, batch.format))
            return results, b'{"results":[' + b",".join(bodies) + b"]}"

        done, error = await on_worker("/score/batch", scored)
        if error is not None:
            return error
        results, body = done
        count("/score/batch", 200)
        state.metrics.stale.inc(sum(r.stale_features for r in results))
        state.metrics.item_errors.inc(sum(len(r.errors) for r in results))
        return Response(body, media_type="application/json")

    @app.post("/score", response_model=ScoreResponse | ScoreArraysResponse)
    async def score(request: ScoreRequest):
        """Documents /score (request and answer models); ``ScoreFastPath`` answers it before FastAPI parses the body."""
        return await answer_score(request)

    @app.post("/score/batch", response_model=ScoreBatchResponse)
    async def score_batch(request: ScoreBatchRequest):
        """Documents /score/batch; ``ScoreFastPath`` answers it before FastAPI parses the body."""
        return await answer_batch(request)

    @app.post("/events", response_model=EventsResponse, status_code=202)
    async def events(request: EventsRequest):
        from mmfs.core.events.landing import Event

        batch = [Event(e.user_id, e.item_id, e.event_timestamp, e.label) for e in request.events]  # UTC already (EventIn)
        done, error = await on_worker("/events", lambda: state.landing.land(batch), needs_store=False)
        if error is not None:
            return error
        count("/events", 202)
        return JSONResponse(status_code=202, content={"accepted": len(batch), "file": done})

    return {"/score": (ScoreRequest, answer_score), "/score/batch": (ScoreBatchRequest, answer_batch)}


SETTINGS_ENV = "MMFS_SERVE_SETTINGS"  # mmfs serve --workers N hands its settings to the worker processes here


def app_from_environment() -> FastAPI:
    """The app of one ``mmfs serve --workers N`` process, from the settings its parent wrote to ``SETTINGS_ENV``."""
    return create_app(ServeSettings(**json.loads(os.environ[SETTINGS_ENV])))


def main(argv: list[str] | None = None) -> int:
    """``mmfs serve``."""
    import uvicorn

    from mmfs.store.feast_store import add_repo_args

    parser = argparse.ArgumentParser(prog="mmfs serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--root", required=True, help="table root the pipeline wrote (POST /events lands files under it)")
    parser.add_argument("--landing", default="", help="the event log folder POST /events appends to (default <root>/_landing/events)")
    parser.add_argument("--request-log", default="", help="where the served-feature log goes (default <root>/_served; off: none)")
    parser.add_argument("--request-log-queue", type=int, default=ServeSettings.request_log_queue,
                        help="records waiting to be written beyond this are dropped and counted (default %(default)s)")
    add_repo_args(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-candidates", type=int, default=2000)
    parser.add_argument("--item-cache-size", type=int, default=500_000)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads per server process (default %(default)s: on few cores a second intra-op thread "
                             "contends with the event loop and the other workers, and the tail grows; 0: torch's default)")
    parser.add_argument("--max-body-bytes", type=int, default=ServeSettings.max_body_bytes, help="larger request bodies get 413")
    parser.add_argument("--max-queue", type=int, default=ServeSettings.max_queue,
                        help="requests waiting beyond this are shed with 503 and Retry-After (default %(default)s)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes sharing the port and the online store, each with its own scorer and caches "
                             "(default %(default)s; one per core uses them all)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = ServeSettings(checkpoint=args.checkpoint, root=args.root, config=args.config, repo=args.repo or "",
                             max_candidates=args.max_candidates, item_cache_size=args.item_cache_size,
                             torch_threads=args.torch_threads,
                             max_body_bytes=args.max_body_bytes, max_queue=args.max_queue, workers=args.workers,
                             landing=args.landing, request_log=args.request_log, request_log_queue=args.request_log_queue)
    if args.workers == 1:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    else:  # uvicorn starts the processes; each builds its app from the settings in the environment
        os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
        uvicorn.run("mmfs.serving.app:app_from_environment", factory=True, workers=args.workers, host=args.host, port=args.port,
                    log_level=args.log_level, access_log=False)
    return 0
