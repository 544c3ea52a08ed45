"""A two-source documentation site on loopback, small enough to ingest in a second or two.

``alpha`` (three pages under /alpha/) and ``beta`` (two pages under /beta/) are separate
sources of one server, so tests can refresh, remove and check them independently.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml

from pipeline.defs.jobs import context_sets_job, ingest_source_job
from pipeline.defs.removal import remove_sources_job
from pipeline.local import LocalRerankService, ServiceConfig
from pipeline.stand_ins import local_scorer
from tests.crawl.site_server import SiteServer
from tests.support import ALL_ASSETS, TEST_KEY, PipelineRun, make_resources

PAGES = {
    "/alpha/index.html": (
        "Alpha guide",
        "The alpha guide explains how to deploy the pipeline on Heroku with one worker dyno.",
        ["install.html", "tuning.html"],
    ),
    "/alpha/install.html": (
        "Installing alpha",
        "Install the package with uv, then run the demo command to fill the data directory.",
        [],
    ),
    "/alpha/tuning.html": (
        "Tuning alpha",
        "Raise the token budget when context sets are too short; lower top_k to bill fewer search units.",
        [],
    ),
    "/beta/index.html": ("Beta handbook", "Beta rotates its API keys every ninety days.", ["keys.html"]),
    "/beta/keys.html": ("Beta keys", "A revoked key answers 401 until the new key is configured.", []),
}
QUERIES = {"q1": "How do I deploy on Heroku?", "q2": "What happens after a key is revoked?"}


def page_html(title: str, text: str, links: list[str]) -> str:
    anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
    return (
        f"<html><head><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p><ul>{anchors}</ul></body></html>"
    )


def source_entry(server: SiteServer, name: str) -> dict:
    return {
        "name": name,
        "start_urls": [server.url(f"/{name}/index.html")],
        "allow_private_hosts": True,
        "discover_sitemaps": False,
    }


def write_yaml(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class TinySite:
    server: SiteServer
    data_dir: Path
    sources_path: Path
    queries_path: Path
    rerank: LocalRerankService
    instance: dg.DagsterInstance

    @property
    def resources(self) -> dict[str, dg.ConfigurableResource]:
        return make_resources(self.data_dir, self.sources_path, self.queries_path, self.rerank.url)

    @property
    def run(self) -> PipelineRun:
        return PipelineRun(self.resources, self.instance)

    def definitions(self) -> dg.Definitions:
        return dg.Definitions(
            assets=ALL_ASSETS,
            jobs=[ingest_source_job, context_sets_job, remove_sources_job],
            resources=self.resources,
        )

    def list_sources(self, *names: str) -> None:
        write_yaml(self.sources_path, {"sources": [source_entry(self.server, name) for name in names]})

    def write_queries(self, queries: dict[str, str]) -> None:
        write_yaml(self.queries_path, {"queries": [{"id": key, "query": text} for key, text in queries.items()]})


@contextmanager
def tiny_site(tmp_path: Path, instance: dg.DagsterInstance) -> Iterator[TinySite]:
    with SiteServer() as server, LocalRerankService(ServiceConfig(api_key=TEST_KEY), scorer=local_scorer()) as rerank:
        for path, (title, text, links) in PAGES.items():
            server.page(path, page_html(title, text, links))
        site = TinySite(
            server, tmp_path / "data", tmp_path / "sources.yaml", tmp_path / "queries.yaml", rerank, instance
        )
        site.data_dir.mkdir()
        site.list_sources("alpha", "beta")
        site.write_queries(QUERIES)
        yield site


@contextmanager
def tiny_site_on_a_persistent_instance(tmp_path: Path) -> Iterator[TinySite]:
    """The site with a SQLite-backed instance, as a deployment has (schedule, sensor and
    re-execution APIs need an instance that can be referred to, which an ephemeral one cannot)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as instance, tiny_site(tmp_path, instance) as site:
        yield site
