"""The app's own request handling, below the routes."""

from __future__ import annotations

import asyncio
import json

import pytest

from pipelines.web.app import _BodyLimit


def _answer(content_length: bytes) -> tuple[int, dict]:
    """Status and JSON body _BodyLimit answers for a request declaring ``content_length``."""
    reached, sent = [], []

    async def app(scope, receive, send) -> None:
        reached.append(scope)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [(b"content-length", content_length)]}
    asyncio.run(_BodyLimit(app, limit=100)(scope, receive, send))
    if reached:
        return 0, {}
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


@pytest.mark.parametrize("declared", [b"-1", b"1e3", b"ten"])
def test_a_content_length_that_is_not_a_number_is_400_not_too_large(declared):
    status, body = _answer(declared)
    assert status == 400
    assert body["detail"] == f"Content-Length {declared.decode()!r} is not a number of bytes"


def test_a_declared_length_over_the_limit_is_413_and_one_within_it_passes():
    assert _answer(b"101")[0] == 413
    assert _answer(b"100")[0] == 0  # reached the app
