"""The rerank key never leaves in a message: checked before any request, redacted in every form it is echoed in."""

from __future__ import annotations

import base64
import json
import logging
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.credentials import Redactor, check_secret
from pipeline.inference import client as client_module
from pipeline.rerank import RerankClient, RerankError, RerankRequest
from pipeline.settings import SettingError
from tests.rerank.conftest import API_KEY, MODEL

QUERY = "How do I optimize database connection pooling?"
DOCUMENTS = ["Connection pooling reuses database connections.", "Bananas are yellow."]
# Characters that every escaping scheme treats differently: quotes, a backslash, URL delimiters.
ODD_KEY = "inf-7c1f\"9a\\2e/4b+6d=8e?0f%&'k"


@pytest.mark.parametrize(
    ("bad_key", "phrase"),
    [
        (API_KEY + "\n", "a line feed (\\n) at its end"),
        (API_KEY + "\r", "a carriage return (\\r) at its end"),
        (API_KEY + "\r\n", "a carriage return (\\r) at character"),
        (" " + API_KEY, "a space at its start"),
        (API_KEY[:8] + "\t" + API_KEY[8:], "a tab (\\t) at character 9"),
        (API_KEY[:8] + "\x00" + API_KEY[8:], "a control character (U+0000) at character 9"),
        (API_KEY + "\u00e9", "a non-ASCII character at its end"),
    ],
)
def test_a_key_with_whitespace_or_control_characters_is_refused_before_any_request(rerank_service, bad_key, phrase):
    with pytest.raises(SettingError) as refused:
        RerankClient(rerank_service.url, bad_key, MODEL)

    message = str(refused.value)
    assert message.startswith("RERANK_KEY contains ") and phrase in message
    assert API_KEY[4:] not in message and API_KEY[4:] not in repr(refused.value)
    assert rerank_service.requests == []


def test_a_clean_key_passes_the_check_unchanged():
    assert check_secret("RERANK_KEY", ODD_KEY) == ODD_KEY


def test_a_key_ending_in_a_newline_that_reaches_the_http_layer_appears_in_no_message(
    rerank_service, monkeypatch, caplog
):
    """Were the check skipped, the HTTP layer refuses the header by quoting it: b'Bearer <key>\\n'."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(client_module, "check_secret", lambda name, value: value, raising=False)
    with RerankClient(rerank_service.url, API_KEY + "\n", MODEL, max_attempts=2, sleep=lambda _: None) as client:
        outcomes = client.rerank_many([RerankRequest("q1", QUERY, DOCUMENTS)])
        with pytest.raises(RerankError) as raised:
            client.rerank(QUERY, DOCUMENTS)

    [outcome] = outcomes
    assert (outcome.ok, outcome.error, outcome.error_type) == (False, "connection_error", "RerankUnavailable")
    assert "[REDACTED]" in outcome.detail
    texts = [outcome.error, outcome.detail, repr(outcome), str(raised.value), repr(raised.value), caplog.text]
    assert any("retry 1 of 1" in record.getMessage() for record in caplog.records)
    for text in texts:
        assert API_KEY[4:] not in text
    assert rerank_service.requests == []


def _echoed_forms(key: str) -> dict[str, str]:
    header = f"Bearer {key}"
    return {
        "raw": header,
        "repr": repr(header),
        "bytes repr": repr(header.encode()),
        "json": json.dumps(header),
        "url-encoded": urllib.parse.quote(header, safe=""),
        "form-encoded": urllib.parse.quote_plus(header, safe=""),
        "base64": base64.b64encode(key.encode()).decode(),
    }


@pytest.fixture
def echo_server() -> Iterator[tuple[str, list[tuple[int, dict]]]]:
    """A loopback server that answers each request with the next (status, body) queued, ``{auth}`` filled in.

    ``{auth}`` becomes the request's Authorization header in the form named by the body's ``form`` key.
    """
    answers: list[tuple[int, dict]] = []

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["content-length"]))
            status, template = answers.pop(0)
            form = _echoed_forms(self.headers["authorization"].removeprefix("Bearer "))[template["form"]]
            body = json.dumps(template["body"]).replace("{auth}", json.dumps(form)[1:-1]).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("form", list(_echoed_forms(ODD_KEY)))
@pytest.mark.parametrize(
    "body",
    [
        (400, {"message": "bad header {auth}"}),
        (500, {"error": {"message": "upstream refused {auth}"}}),
        (404, {"detail": "no model for {auth}"}),
        # The key straddles the 500 characters of server text an error quotes.
        (400, {"message": "x" * 480 + "{auth}"}),
        (200, {"results": [{"index": "{auth}", "relevance_score": 1.0}], "meta": {}}),
        (
            200,
            {
                "results": [{"index": 0, "relevance_score": 0.5}],
                "meta": {"api_version": ["{auth}"], "billed_units": {"search_units": 1}},
            },
        ),
    ],
    ids=["400", "500", "404", "cut-at-500", "malformed-result", "malformed-api-version"],
)
def test_every_form_of_an_echoed_key_is_redacted(echo_server, caplog, form, body):
    caplog.set_level(logging.DEBUG)
    url, answers = echo_server
    status, template = body
    answers.extend([(status, {"form": form, "body": template})] * 2)
    client = RerankClient(url, ODD_KEY, MODEL, max_attempts=2, requests_per_minute=60_000, sleep=lambda _: None)
    with client, pytest.raises(RerankError) as raised:
        client.rerank(QUERY, DOCUMENTS, top_n=1)

    echoed = _echoed_forms(ODD_KEY)[form]
    texts = [str(raised.value), repr(raised.value), caplog.text]
    assert "[REDACTED]" in str(raised.value)
    for text in texts:
        assert echoed not in text and "7c1f" not in text and echoed[-12:] not in text


def test_the_redactor_keeps_ordinary_text_and_shows_no_secret_in_its_repr():
    redact = Redactor(API_KEY + "\n", None, "")
    assert redact("nothing secret here") == "nothing secret here"
    assert redact(f"header b'Bearer {API_KEY}\\n' refused") == "header b'Bearer [REDACTED]' refused"
    assert API_KEY not in repr(redact)
