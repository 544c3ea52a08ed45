from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.crawl import Source, SourceConfigError, load_sources


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_sources_applies_defaults_and_normalises(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
sources:
  - name: pg-docs
    start_urls: ["HTTPS://www.PostgreSQL.org:443/docs/15/index.html"]
  - name: dagster_docs
    start_urls: [https://docs.dagster.io/]
    sitemap_urls: [https://docs.dagster.io/sitemap.xml]
    allowed_prefixes: [https://docs.dagster.io/guides/, https://docs.dagster.io/]
    include: ['^https://docs\\.dagster\\.io/']
    exclude: ['/api/python-api/', '\\?']
    max_pages: 50
    max_depth: 0
    delay_seconds: 0.5
    max_concurrency_per_host: 2
    discover_sitemaps: false
""",
    )
    pg, dagster = load_sources(path)
    assert pg == Source("pg-docs", ("https://www.postgresql.org/docs/15/index.html",))
    assert pg.allowed_prefixes == ("https://www.postgresql.org/docs/15/",)
    assert (pg.max_pages, pg.max_depth, pg.max_concurrency_per_host, pg.delay_seconds) == (500, 5, 4, 0.0)
    assert pg.discover_sitemaps and not pg.allow_private_hosts
    assert pg.in_scope("https://www.postgresql.org/docs/15/sql.html")
    assert not pg.in_scope("https://www.postgresql.org/docs/16/sql.html")
    assert not pg.in_scope("https://www.postgresql.org.evil.test/docs/15/sql.html")

    assert dagster.in_scope("https://docs.dagster.io/guides/x")
    assert not dagster.in_scope("https://docs.dagster.io/api/python-api/assets")
    assert not dagster.in_scope("https://docs.dagster.io/guides/x?page=2")
    assert (dagster.max_depth, dagster.delay_seconds, dagster.discover_sitemaps) == (0, 0.5, False)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "{name: ok-name, start_urls: [http://h.test/], colour: blue}",
            "source 'ok-name': field 'colour': unknown field",
        ),
        ("{name: ok-name}", "source 'ok-name': field 'start_urls': required"),
        (
            "{name: ok-name, start_urls: [ftp://h.test/]}",
            "field 'start_urls': 'ftp://h.test/' is not an absolute http(s) URL",
        ),
        ("{name: ok-name, start_urls: http://h.test/}", "field 'start_urls': must be a list of strings"),
        ("{name: ok-name, start_urls: []}", "field 'start_urls': needs at least one URL"),
        ("{name: Bad Name, start_urls: [http://h.test/]}", "source 'Bad Name': field 'name': must match"),
        (
            "{name: ok-name, start_urls: [http://h.test/], include: ['(unclosed']}",
            "field 'include': bad regular expression '(unclosed'",
        ),
        (
            "{name: ok-name, start_urls: [http://h.test/], max_pages: 0}",
            "field 'max_pages': must be an integer >= 1, got 0",
        ),
        ("{name: ok-name, start_urls: [http://h.test/], max_depth: -1}", "field 'max_depth': must be an integer >= 0"),
        (
            "{name: ok-name, start_urls: [http://h.test/], max_concurrency_per_host: true}",
            "field 'max_concurrency_per_host'",
        ),
        ("{name: ok-name, start_urls: [http://h.test/], delay_seconds: -1}", "field 'delay_seconds'"),
        (
            "{name: ok-name, start_urls: [http://h.test/], allow_private_hosts: 'yes'}",
            "field 'allow_private_hosts': must be true or false",
        ),
        (
            "{name: ok-name, start_urls: [http://h.test/docs/], allowed_prefixes: [http://h.test/blog/]}",
            "field 'start_urls': http://h.test/docs/ is outside the source's own scope",
        ),
        ("[not, a, mapping]", "expected a mapping of source fields"),
    ],
)
def test_invalid_sources_name_file_entry_and_field(tmp_path: Path, entry: str, message: str) -> None:
    path = write(tmp_path, f"sources:\n  - {{name: first, start_urls: [http://h.test/]}}\n  - {entry}\n")
    with pytest.raises(SourceConfigError) as error:
        load_sources(path)
    assert str(error.value).startswith(f"{path} (entry 2): ")
    assert message in str(error.value)


def test_duplicate_names_are_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "sources:\n  - {name: same, start_urls: [http://a.test/]}\n  - {name: same, start_urls: [http://b.test/]}\n",
    )
    with pytest.raises(SourceConfigError, match=r"\(entry 2\): source 'same': field 'name': duplicate source name"):
        load_sources(path)


@pytest.mark.parametrize("text", ["", "sources: {}", "- a\n- b", "sources: [\n"])
def test_malformed_files_are_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(SourceConfigError, match=str(tmp_path)):
        load_sources(write(tmp_path, text))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError, match="cannot read sources"):
        load_sources(tmp_path / "absent.yaml")
