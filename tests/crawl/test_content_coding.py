"""Content-Encoding is undone under the size cap: a decompression bomb costs the fetcher
a few pieces of memory, whatever its ratio and wherever it is served (page, robots.txt,
sitemap)."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from pipeline.crawl.fetcher import Fetcher
from tests.crawl.conftest import FAST
from tests.crawl.site_server import Reply, SiteServer

GIB = 1024**3
PEAK_ALLOWANCE = 64 * 1024**2
ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter so that its peak resident set (VmHWM) belongs to these
# fetches alone. The address space is capped 1 GiB above the baseline, so a fetcher that
# inflated the bomb fails with MemoryError at once instead of taking the machine's memory.
_BOMB_FETCHES = """
import asyncio, json, resource, sys

from pipeline.crawl.fetcher import Fetcher
from pipeline.crawl.robots import fetch_robots
from pipeline.crawl.sitemap import collect_sitemap_urls

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + 1024**3, resource.RLIM_INFINITY))
base = sys.argv[1]

async def fetch_all():
    async with Fetcher(allow_private_hosts=True) as fetcher:
        page = await fetcher.fetch(base + "/bomb.html")
        peaks = {"page": status("VmHWM")}
        robots = await fetch_robots(fetcher, base, "test-agent")
        peaks["robots"] = status("VmHWM")
        sitemaps = await collect_sitemap_urls(fetcher, [base + "/sitemap.xml"], keep=lambda url: True, max_urls=10)
        peaks["sitemap"] = status("VmHWM")
        return {"page": page.error, "robots": robots.status, "sitemap": sitemaps.errors,
                "downloaded": fetcher.bytes_downloaded, "peaks": peaks}

baseline = status("VmHWM")
outcome = asyncio.run(fetch_all())
print(json.dumps({"baseline": baseline, **outcome}))
"""


@pytest.fixture(scope="module")
def stacked_gzip_bomb(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """1 GiB of zeros, gzipped twice: about 1.8 KB. Built by streaming (2-3 s) and kept
    for the rest of the session."""
    path = tmp_path_factory.getbasetemp() / "zeros-1gib.gz.gz"
    if not path.exists():
        inner = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        megabyte = bytes(1024 * 1024)
        once = b"".join(inner.compress(megabyte) for _ in range(GIB // len(megabyte))) + inner.flush()
        path.write_bytes(gzip.compress(once, 9))
    return path.read_bytes()


def test_a_stacked_gzip_bomb_stays_within_the_memory_allowance(site: SiteServer, stacked_gzip_bomb: bytes) -> None:
    assert len(stacked_gzip_bomb) < 4096
    coded = {"Content-Encoding": "gzip, gzip"}
    site.routes["/bomb.html"] = Reply(body=stacked_gzip_bomb, headers=coded)
    site.routes["/robots.txt"] = Reply(body=stacked_gzip_bomb, content_type="text/plain", headers=coded)
    site.routes["/sitemap.xml"] = Reply(body=stacked_gzip_bomb, content_type="application/xml", headers=coded)

    run = subprocess.run(
        [sys.executable, "-c", _BOMB_FETCHES, site.base], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    outcome = json.loads(run.stdout)
    assert outcome["page"] == "too_large"
    assert outcome["robots"] == "ok"  # the first 500 KiB, as for any long robots.txt
    assert outcome["sitemap"] == {site.url("/sitemap.xml"): "too_large"}
    assert outcome["downloaded"] <= 3 * len(stacked_gzip_bomb)
    for fetched, peak in outcome["peaks"].items():
        assert peak - outcome["baseline"] <= PEAK_ALLOWANCE, (fetched, peak - outcome["baseline"])


def fetch(site: SiteServer, path: str, **kwargs: object):
    async def run():
        async with Fetcher(config=FAST, allow_private_hosts=True) as fetcher:
            return await fetcher.fetch(site.url(path), **kwargs)  # type: ignore[arg-type]

    return asyncio.run(run())


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


PAGE = b"<html><body>" + b"<p>Install, configure, back up.</p>" * 4000 + b"</body></html>"


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", gzip.compress(PAGE)),
        ("x-gzip", gzip.compress(PAGE)),
        ("deflate", zlib.compress(PAGE)),
        ("deflate", raw_deflate(PAGE)),  # what some servers send as "deflate"
        ("gzip, deflate", zlib.compress(gzip.compress(PAGE))),
        ("identity, gzip", gzip.compress(PAGE)),
    ],
    ids=["gzip", "x-gzip", "zlib-deflate", "raw-deflate", "gzip-then-deflate", "identity-gzip"],
)
def test_advertised_codings_are_decoded(site: SiteServer, coding: str, body: bytes) -> None:
    site.routes["/page.html"] = Reply(body=body, headers={"Content-Encoding": coding})
    result = fetch(site, "/page.html")
    assert (result.error, result.body) == (None, PAGE)
    assert site.requests_for("/page.html")[0].headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("coding", "body", "error"),
    [
        ("gzip, gzip, gzip", gzip.compress(gzip.compress(gzip.compress(PAGE))), "too_many_encodings"),
        ("br", PAGE, "bad_encoding"),  # never advertised
        ("compress", PAGE, "bad_encoding"),
        ("gzip", b"\x1f\x8b\x08\x00" + b"not gzip at all" * 10, "bad_encoding"),
        ("deflate", b"\xff" * 200, "bad_encoding"),
    ],
    ids=["three-stacked", "br", "compress", "corrupt-gzip", "corrupt-deflate"],
)
def test_codings_that_cannot_be_undone_are_refused_with_a_reason(
    site: SiteServer, coding: str, body: bytes, error: str
) -> None:
    site.routes["/page.html"] = Reply(body=body, headers={"Content-Encoding": coding})
    result = fetch(site, "/page.html")
    assert (result.status, result.error, result.body) == (200, error, None)


def test_the_cap_counts_decoded_bytes_and_truncation_keeps_the_decoded_start(site: SiteServer) -> None:
    site.routes["/page.html"] = Reply(body=gzip.compress(PAGE), headers={"Content-Encoding": "gzip"})
    assert len(gzip.compress(PAGE)) < 10_000 < len(PAGE)
    assert fetch(site, "/page.html", max_bytes=10_000).error == "too_large"
    assert fetch(site, "/page.html", max_bytes=10_000, truncate=True).body == PAGE[:10_000]
