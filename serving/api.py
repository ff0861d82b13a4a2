"""The HTTP API's request and response models (pydantic), and its self-contained docs page.

Ids are int64 (larger ones are a 422, not a crash); times are ISO-8601 strings with a zone (a bare
number is not silently epoch seconds).
"""
from __future__ import annotations

import datetime as dt
from typing import Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, field_validator
from typing_extensions import Annotated

MAX_EVENTS = 10_000
MAX_BATCH = 64  # users per POST /score/batch
INT64 = Annotated[StrictInt, Field(ge=-(2 ** 63), le=2 ** 63 - 1)]  # the stores' id type: larger ids are a 422, not a crash
EARLIEST_AT = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def iso_time_only(value):
    """Times come as ISO-8601 strings with a zone; a bare number is not silently epoch seconds."""
    if value is not None and not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string with a time zone, e.g. 2018-10-01T00:00:00Z")
    return value


class UserCandidates(BaseModel):
    """One user's candidate items, scored as of ``at`` (default now)."""

    model_config = ConfigDict(extra="forbid")
    user_id: INT64
    item_ids: list[INT64] = Field(min_length=1, description="candidate item ids, at most the server's max_candidates")
    at: AwareDatetime | None = Field(None, description="score as of this time (replays, tests); default now")

    @field_validator("at", mode="before")
    @classmethod
    def at_is_text(cls, value):
        """Refuse a non-string ``at`` (see ``iso_time_only``)."""
        return iso_time_only(value)


FORMAT = Field("items", description="the answer's shape: one object per candidate (items, ScoreResponse) or one array per "
                                    "field (arrays, ScoreArraysResponse: cheaper at large C)")


class ScoreRequest(UserCandidates):
    """POST /score: one user's candidate items, scored as of ``at`` (default now)."""

    format: Literal["items", "arrays"] = FORMAT


class ScoreBatchRequest(BaseModel):
    """POST /score/batch: up to ``MAX_BATCH`` users' candidates in one request, each scored as
    POST /score scores it and answered in the same order (one HTTP round trip and one hop to the
    scoring worker for all of them)."""

    model_config = ConfigDict(extra="forbid")
    requests: list[UserCandidates] = Field(min_length=1, max_length=MAX_BATCH)
    format: Literal["items", "arrays"] = FORMAT


class ItemScoreOut(BaseModel):
    """One candidate's click probability and flags, or its error."""

    item_id: int
    score: float | None = Field(description="click probability; null with an error")
    flags: list[str] = Field(description="new_item, no_embedding, no_item_stats, stale:<view>")
    error: str | None = None


class ScoreResponse(BaseModel):
    """POST /score's answer: per-candidate scores, user flags, history length, stale count and timings."""

    user_id: int
    feature_service: str
    model: str
    items: list[ItemScoreOut]
    user_flags: list[str] = Field(description="no_sequence (cold start), stale:user_sequence, no_user_stats (no event before)")
    history_len: int
    stale_features: int
    timings_ms: dict[str, float]
    request_id: str = Field("", description="the served-feature log's record of this request (mmfs consistency joins on it)")


class ScoreArraysResponse(BaseModel):
    """POST /score's answer with ``"format": "arrays"``: the candidates' fields as parallel arrays in request order."""

    user_id: int
    feature_service: str
    model: str
    item_ids: list[int]
    scores: list[float | None] = Field(description="click probabilities; null for a candidate with an error")
    item_flags: list[list[str]] = Field(description="each candidate's flags: new_item, no_embedding, no_item_stats, stale:<view>")
    item_errors: list[str | None] = Field(description="each candidate's error, null where it was scored")
    user_flags: list[str]
    history_len: int
    stale_features: int
    timings_ms: dict[str, float]
    request_id: str = ""


def score_body(result, model: str, format: str = "items") -> bytes:
    """``result`` (a ``mmfs.serving.results.ScoreResult``) as POST /score's JSON body in ``format``
    (``ScoreResponse`` or ``ScoreArraysResponse``). Encoded by orjson straight from the result's
    arrays: NaN (an error entry's score) becomes null; pydantic never sees the C candidates again."""
    head = {"user_id": result.user_id, "feature_service": result.feature_service, "model": model}
    tail = {"user_flags": result.user_flags, "history_len": result.history_len, "stale_features": result.stale_features,
            "timings_ms": result.timings_ms, "request_id": result.request_id}
    if format == "arrays":
        body = {**head, "item_ids": result.item_ids, "scores": result.probabilities, "item_flags": result.flags,
                "item_errors": result.item_errors, **tail}
    else:
        errors = result.item_errors
        items = [{"item_id": i, "score": p, "flags": f, "error": e}
                 for i, p, f, e in zip(result.item_ids, result.probabilities.tolist(), result.flags, errors)]
        body = {**head, "items": items, **tail}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


class ScoreBatchResponse(BaseModel):
    """POST /score/batch's answer: one /score answer per request, in request order."""

    results: list[ScoreResponse | ScoreArraysResponse]


class EventIn(BaseModel):
    """One impression (label 0) or click (label 1) posted to the event log."""

    model_config = ConfigDict(extra="forbid")
    user_id: INT64
    item_id: INT64
    label: Annotated[StrictInt, Field(ge=0, le=1)]  # 0 or 1 as an integer: true or 1.0 are refused, as the stream refuses them
    event_timestamp: AwareDatetime

    @field_validator("event_timestamp", mode="before")
    @classmethod
    def timestamp_is_text(cls, value):
        """Refuse a non-string ``event_timestamp`` (see ``iso_time_only``)."""
        return iso_time_only(value)

    @field_validator("event_timestamp", mode="after")
    @classmethod
    def in_utc(cls, value: dt.datetime) -> dt.datetime:
        """The time in UTC; one whose UTC form is outside the years 1 to 9999 is refused (a 422, not a 500)."""
        try:
            return value.astimezone(dt.timezone.utc)
        except OverflowError as exc:
            raise ValueError("outside the representable range once converted to UTC") from exc


class EventsRequest(BaseModel):
    """POST /events: between 1 and ``MAX_EVENTS`` events."""

    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    """POST /events's answer (202): the events were checked and appended to the event log; the
    stream applies them (duplicates of recorded events are no-ops there)."""

    accepted: int
    file: str  # the landing file that holds them


def offline_docs(schema: dict) -> str:
    """The OpenAPI schema as one self-contained HTML page (no CDN, no script): each endpoint, its
    request and response models; the machine-readable schema is at /openapi.json."""
    import html
    import json as json_

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(schema['info']['title'])}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{background:#f4f4f4;padding:.5em;overflow:auto}</style>",
             f"</head><body><h1>{html.escape(schema['info']['title'])}</h1><p>{html.escape(schema['info'].get('description', ''))}</p>",
             "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a></p>"]
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            parts.append(f"<h2>{method.upper()} {html.escape(path)}</h2>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                parts.append(f"<p>Request body: <code>{html.escape(body.get('$ref', '').rsplit('/', 1)[-1])}</code></p>")
            codes = ", ".join(sorted(op.get("responses", {})))
            parts.append(f"<p>Responses: {html.escape(codes)}</p>")
    for name, model in schema.get("components", {}).get("schemas", {}).items():
        parts.append(f"<h3 id='{html.escape(name)}'>{html.escape(name)}</h3><pre>{html.escape(json_.dumps(model, indent=2))}</pre>")
    parts.append("</body></html>")
    return "".join(parts)
