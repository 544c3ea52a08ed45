"""The SSRF guard: every connection, redirect hops included, goes only to public addresses
unless the source opts in. Nothing here sends a packet beyond loopback: fake public
names resolve (through the resolver seam) to a public address that the test network
backend maps onto the loopback server, and the backend refuses any other destination."""

from __future__ import annotations

import asyncio
import ssl

import httpcore
import pytest
import trustme

from pipeline.crawl import KnownPage, crawl
from pipeline.crawl.fetcher import Fetcher, is_blocked_address
from tests.crawl.conftest import FAST, by_url, docs_source, html
from tests.crawl.site_server import Reply, SiteServer

PUBLIC = "93.184.216.34"  # a global address; never contacted, the network backend maps it to 127.0.0.1


class LoopbackNAT(httpcore.AnyIOBackend):
    """Connects to 127.0.0.1 when asked for ``PUBLIC`` and refuses every other destination."""

    def __init__(self) -> None:
        self.destinations: list[str] = []

    async def connect_tcp(self, host: str, port: int, *args: object, **kwargs: object) -> httpcore.AsyncNetworkStream:
        self.destinations.append(host)
        if host != PUBLIC:
            raise httpcore.ConnectError(f"test network refuses to connect to {host}")
        return await super().connect_tcp("127.0.0.1", port, *args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.7",
        "172.16.5.4",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "198.51.100.7",
        "::1",
        "::",
        "fc00::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:a00:1::1",
        "64:ff9b::a9fe:a9fe",
    ],
)
def test_non_public_addresses_are_blocked(address: str) -> None:
    assert is_blocked_address(address)


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert not is_blocked_address(address)


@pytest.mark.parametrize(
    "answer",
    [
        ["10.0.0.7"],
        ["169.254.169.254"],
        ["::1"],
        ["fc00::1"],
        ["::ffff:127.0.0.1"],
        [PUBLIC, "10.0.0.7"],  # one bad address is enough
    ],
)
def test_names_resolving_to_private_addresses_are_refused_before_connecting(answer: list[str]) -> None:
    nat = LoopbackNAT()

    async def fetch() -> str | None:
        async with Fetcher(network_backend=nat, resolver=lambda host: answer) as fetcher:
            return (await fetcher.fetch("http://internal.test/latest/meta-data")).error

    assert asyncio.run(fetch()) == "blocked_address"
    assert nat.destinations == []


def test_ip_literals_are_checked_without_resolving() -> None:
    nat = LoopbackNAT()
    asked: list[str] = []

    async def fetch(url: str) -> str | None:
        async with Fetcher(network_backend=nat, resolver=lambda host: asked.append(host) or [PUBLIC]) as fetcher:
            return (await fetcher.fetch(url)).error

    for url in ("http://169.254.169.254/latest/meta-data", "http://[::ffff:127.0.0.1]/", "http://[fc00::1]:8080/"):
        assert asyncio.run(fetch(url)) == "blocked_address", url
    assert asked == [] and nat.destinations == []


def test_loopback_source_is_refused_without_opt_in(site: SiteServer) -> None:
    site.page("/docs/index.html", html("Home"))
    stored = site.url("/docs/stored.html")
    crawler = crawl(
        docs_source(site, allow_private_hosts=False), {stored: KnownPage(stored, None, None, "h")}, fetch_config=FAST
    )
    results = by_url(list(crawler))
    start = site.url("/docs/index.html")
    assert (results[start].outcome, results[start].reason) == ("skipped", "blocked_address")
    # A stored page is not deleted because its host now resolves somewhere refused.
    assert (results[stored].outcome, results[stored].reason) == ("failed", "blocked_address")
    assert site.log == []
    assert crawler.stats.robots == {site.base: "blocked (blocked_address)"}


def test_redirects_to_private_addresses_are_refused_at_each_hop(site: SiteServer) -> None:
    port = site.port
    public = f"http://docs.public.test:{port}"
    site.page("/docs/index.html", html("Home", "to-intranet.html", "to-loopback.html", "to-mapped.html", "fine.html"))
    site.routes["/docs/to-intranet.html"] = Reply(302, headers={"Location": f"http://intranet.test:{port}/docs/x"})
    site.routes["/docs/to-loopback.html"] = Reply(302, headers={"Location": f"http://127.0.0.1:{port}/docs/x"})
    site.routes["/docs/to-mapped.html"] = Reply(302, headers={"Location": f"http://[::ffff:127.0.0.1]:{port}/docs/x"})
    site.page("/docs/fine.html", html("Fine"))
    site.page("/docs/x", html("Internal"))
    resolutions: list[str] = []

    def resolver(host: str) -> list[str]:
        resolutions.append(host)
        # The second answer for the public name would be a rebinding attack; it is never asked for.
        return {
            "docs.public.test": [PUBLIC] if resolutions.count(host) == 1 else ["127.0.0.1"],
            "intranet.test": ["10.1.2.3"],
        }[host]

    nat = LoopbackNAT()
    # The prefixes admit the private targets, so only the guard can stop them.
    source = docs_source(
        site,
        start_urls=(f"{public}/docs/index.html",),
        allow_private_hosts=False,
        allowed_prefixes=(
            f"{public}/docs/",
            f"http://intranet.test:{port}/docs/",
            f"http://127.0.0.1:{port}/docs/",
            f"http://[::ffff:7f00:1]:{port}/docs/",
        ),
    )
    results = by_url(list(crawl(source, fetch_config=FAST, network_backend=nat, resolver=resolver)))

    outcome = {url.removeprefix(public): (r.outcome, r.reason) for url, r in results.items()}
    assert outcome == {
        "/docs/index.html": ("new", None),
        "/docs/fine.html": ("new", None),
        "/docs/to-intranet.html": ("skipped", "blocked_address"),
        "/docs/to-loopback.html": ("skipped", "blocked_address"),
        "/docs/to-mapped.html": ("skipped", "blocked_address"),
    }
    assert set(nat.destinations) == {PUBLIC}  # pinned to the checked address
    assert site.count("/docs/x") == 0
    assert {seen.headers["host"] for seen in site.log} == {f"docs.public.test:{port}"}
    assert resolutions.count("docs.public.test") == 1


def test_a_robots_redirect_to_a_private_address_leaves_the_rules_unavailable(site: SiteServer) -> None:
    public = f"http://docs.public.test:{site.port}"
    site.routes["/robots.txt"] = Reply(302, headers={"Location": f"http://intranet.test:{site.port}/robots.txt"})
    site.page("/docs/index.html", html("Home"))
    start = f"{public}/docs/index.html"
    nat = LoopbackNAT()
    crawler = crawl(
        docs_source(site, start_urls=(start,), allow_private_hosts=False),
        fetch_config=FAST,
        network_backend=nat,
        resolver=lambda host: {"docs.public.test": [PUBLIC], "intranet.test": ["10.1.2.3"]}[host],
    )
    results = by_url(list(crawler))
    # The origin itself is public, so the refused hop must not read as "no rules here".
    assert (results[start].outcome, results[start].reason) == ("failed", "robots_unavailable")
    assert crawler.stats.robots == {public: "unavailable (blocked_address)"}
    assert site.paths() == {"/robots.txt"} and set(nat.destinations) == {PUBLIC}


@pytest.mark.parametrize(
    ("certificate_name", "outcome"), [("docs.secure.test", "new"), ("someone-else.test", "failed")]
)
def test_https_goes_to_the_checked_address_with_sni_and_certificate_check(certificate_name: str, outcome: str) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(certificate_name).configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    with SiteServer(tls=server_tls) as site:
        site.page("/docs/index.html", html("Secure home"))
        start = f"https://docs.secure.test:{site.port}/docs/index.html"
        source = docs_source(site, start_urls=(start,), allow_private_hosts=False, discover_sitemaps=False)
        results = by_url(
            list(
                crawl(
                    source,
                    fetch_config=FAST,
                    network_backend=LoopbackNAT(),
                    ssl_context=client_tls,
                    resolver=lambda host: [PUBLIC] if host == "docs.secure.test" else [],
                )
            )
        )
    assert results[start].outcome == outcome
    if outcome == "new":
        assert "Secure home" in results[start].html
        assert {seen.headers["host"] for seen in site.log} == {f"docs.secure.test:{site.port}"}
    else:  # the certificate does not name the host: no request ever reached the server
        assert results[start].reason == "robots_unavailable" and site.log == []


def test_tls_connections_are_pooled_per_host_name() -> None:
    """Two names on one address, a certificate for only one of them: the other must fail
    verification even while a verified connection to the address sits in the pool."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("docs.secure.test").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    nat = LoopbackNAT()
    with SiteServer(tls=server_tls) as site:
        site.page("/docs/index.html", html("Secure home"))

        async def fetch_both():
            async with Fetcher(
                config=FAST, network_backend=nat, ssl_context=client_tls, resolver=lambda host: [PUBLIC]
            ) as fetcher:
                verified = await fetcher.fetch(f"https://docs.secure.test:{site.port}/docs/index.html")
                again = await fetcher.fetch(f"https://docs.secure.test:{site.port}/docs/index.html")
                impostor = await fetcher.fetch(f"https://impostor.test:{site.port}/docs/index.html")
                return verified, again, impostor

        verified, again, impostor = asyncio.run(fetch_both())
    assert (verified.status, again.status) == (200, 200)
    assert (impostor.status, impostor.error) == (None, "connect_error")
    assert {seen.headers["host"] for seen in site.log} == {f"docs.secure.test:{site.port}"}
    # One connection served both requests for the good name; the impostor's attempts each opened their own.
    assert len(nat.destinations) == 1 + 1 + FAST.max_retries and set(nat.destinations) == {PUBLIC}
