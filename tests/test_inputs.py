"""Sources and queries files read from http(s) URLs, against a real HTTP server on loopback."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

from pipeline.crawl.sources import SourceConfigError, load_sources
from pipeline.inputs import InputUnavailable, display_location, read_input
from pipeline.queries import QueriesFileError, load_queries
from tests.crawl.site_server import Reply, SiteServer, repeated

QUERIES_YAML = "queries:\n  - {id: q1, query: 'How do I deploy?'}\n  - {id: q2, query: 'Why do I get a 401?'}\n"
SOURCES_YAML = yaml.safe_dump(
    {"sources": [{"name": "user-guide", "start_urls": ["https://docs.example.com/guide/"], "max_pages": 20}]}
)


@pytest.fixture
def server():
    with SiteServer() as site:
        yield site


def test_queries_and_sources_are_read_from_urls(server):
    server.routes["/raw/queries.yaml?token=s3cr3t"] = Reply(body=QUERIES_YAML, content_type="text/plain")
    server.routes["/raw/queries.jsonl"] = Reply(
        body="\n".join(json.dumps({"id": f"j{i}", "query": f"question {i}"}) for i in range(3)),
        content_type="text/plain; charset=utf-8",
    )
    server.routes["/raw/sources.yaml"] = Reply(body=SOURCES_YAML, content_type="text/plain")
    assert [q.query_id for q in load_queries(server.url("/raw/queries.yaml?token=s3cr3t"))] == ["q1", "q2"]
    # The URL's path decides the format, as a file's name does.
    assert [q.query for q in load_queries(server.url("/raw/queries.jsonl"))] == [f"question {i}" for i in range(3)]
    [source] = load_sources(server.url("/raw/sources.yaml"))
    assert source.name == "user-guide" and source.max_pages == 20


def test_redirects_are_followed(server):
    server.routes["/latest"] = Reply(302, headers={"Location": "/v2/queries.yaml"})
    server.routes["/v2/queries.yaml"] = Reply(body=QUERIES_YAML)
    assert len(load_queries(server.url("/latest"))) == 2


def test_http_errors_name_the_setting_and_hide_the_credentials(server):
    url = server.url("/missing.yaml?token=s3cr3t").replace("http://", "http://user:pa55@")
    with pytest.raises(InputUnavailable) as raised:
        load_queries(url)
    message = str(raised.value)
    assert message.startswith("PIPELINE_QUERIES: GET ") and "HTTP 404" in message
    assert "s3cr3t" not in message and "pa55" not in message and "/missing.yaml" in message
    with pytest.raises(SourceConfigError) as raised:
        load_sources(url)
    assert "PIPELINE_SOURCES" in str(raised.value) and "HTTP 404" in str(raised.value)
    assert "s3cr3t" not in str(raised.value) and "pa55" not in str(raised.value)


def test_bad_content_behind_a_url_is_a_content_error(server):
    server.routes["/queries.yaml"] = Reply(body="queries: [\n")
    with pytest.raises(QueriesFileError, match=r"queries.yaml: invalid YAML"):
        load_queries(server.url("/queries.yaml"))


def test_size_cap_stops_the_download(server):
    server.routes["/declared"] = Reply(body=b"x" * 2048)
    server.routes["/streamed"] = Reply(stream=repeated(b"y" * 1024, 4096))  # 4 MiB, no Content-Length
    with pytest.raises(InputUnavailable, match="2,048 bytes, more than the 1,000 allowed"):
        read_input(server.url("/declared"), setting="PIPELINE_QUERIES", max_bytes=1000)
    with pytest.raises(InputUnavailable, match="larger than the 10,000 bytes allowed"):
        read_input(server.url("/streamed"), setting="PIPELINE_QUERIES", max_bytes=10_000)
    # The client hung up long before the server could send everything.
    assert server.requests_for("/streamed")[0].sent < 4096 * 1024


def test_timeouts_and_refused_connections(server):
    server.routes["/slow"] = Reply(body=QUERIES_YAML, delay=1.0)
    with pytest.raises(InputUnavailable, match="no answer from .*/slow in time"):
        read_input(server.url("/slow"), setting="PIPELINE_QUERIES", timeout=httpx.Timeout(0.2))
    closed = server.url("/queries.yaml").replace(str(server.port), "1")
    with pytest.raises(InputUnavailable, match=r"cannot download http://127.0.0.1:1/queries.yaml \(ConnectError\)"):
        read_input(closed, setting="PIPELINE_QUERIES")


def test_local_files_keep_their_checks(tmp_path):
    latin1 = tmp_path / "queries.yaml"
    latin1.write_bytes("queries:\n  - {id: a, query: café}\n".encode("latin-1"))
    with pytest.raises(InputUnavailable, match="is not UTF-8 text"):
        load_queries(latin1)
    with pytest.raises(QueriesFileError, match="PIPELINE_QUERIES"):
        load_queries(tmp_path / "absent.yaml")


def test_display_location():
    assert (
        display_location("https://u:p@raw.example.com:8443/a/q.yaml?token=x#frag")
        == "https://raw.example.com:8443/a/q.yaml"
    )
    assert display_location("/srv/queries.yaml") == "/srv/queries.yaml"
