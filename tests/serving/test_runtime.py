"""``ScoreFastPath``: POST /score parsed by pydantic's JSON validator in one pass, its mistakes
named as FastAPI names them (``body.<field>``); anything else goes on to the app untouched."""
import asyncio

from mmfs.serving.runtime import ScoreFastPath


def call(path: str, chunks: list[bytes], method: str = "POST"):
    """Run one request through a ScoreFastPath whose answer and app record what reached them."""
    seen = {}

    class Answer:
        def __init__(self, status, body):
            self.status, self.body = status, body

        async def __call__(self, scope, receive, send):
            await send({"type": "http.response.start", "status": self.status, "headers": []})
            await send({"type": "http.response.body", "body": self.body})

    async def answer(request):
        seen["request"] = request
        return Answer(200, b"scored")

    def invalid(endpoint, errors):
        seen["invalid"] = (endpoint, [(e["loc"], e["type"]) for e in errors])
        return Answer(422, b"invalid")

    async def app(scope, receive, send):
        seen["app"] = scope["path"]
        await Answer(204, b"")(scope, receive, send)

    messages = iter([{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "method": method, "headers": []}
    from mmfs.serving.api import ScoreRequest

    asyncio.run(ScoreFastPath(app, {"/score": (ScoreRequest, answer)}, invalid)(scope, receive, send))
    return seen, sent[0]["status"]


def test_a_body_in_chunks_is_parsed_whole():
    seen, status = call("/score", [b'{"user_id": 3, "item_', b'ids": [1, 2], "at": "2021-02-01T00:00:00Z", "format": "arrays"}'])
    assert status == 200 and "app" not in seen
    request = seen["request"]
    assert (request.user_id, request.item_ids, request.format, request.at.isoformat()) == (3, [1, 2], "arrays", "2021-02-01T00:00:00+00:00")


def test_mistakes_name_the_field_under_body():
    seen, status = call("/score", [b'{"user_id": 9223372036854775808, "item_ids": [1, "x"], "extra": 1}'])
    assert status == 422 and "request" not in seen
    endpoint, errors = seen["invalid"]
    assert endpoint == "/score"
    assert {loc for loc, _ in errors} == {("body", "user_id"), ("body", "item_ids", 1), ("body", "extra")}
    seen, status = call("/score", [b'{"user_id": 1, "item_ids": [1], "at": 1600000000}'])  # a bare number is not a time
    assert status == 422 and [loc for loc, _ in seen["invalid"][1]] == [("body", "at")]
    seen, status = call("/score", [b'{"user_id": 1, "item_ids": [1'])  # not JSON
    assert status == 422 and seen["invalid"][1][0] == (("body",), "json_invalid")


def test_other_requests_go_on_to_the_app():
    for path, method in (("/events", "POST"), ("/score", "GET"), ("/scores", "POST")):
        seen, status = call(path, [b"{}"], method)
        assert seen == {"app": path} and status == 204
