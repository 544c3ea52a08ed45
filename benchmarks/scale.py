"""The scaling curve: cold ingest and no-change refresh of a synthetic docs site of growing size.

    uv run python -m benchmarks.scale [--sizes 1000 5000 20000 50000] [--embeddings local|remote]

For each size, in a fresh process (so its peak RSS is that size's alone):

- a synthetic docs site of that many pages (``tests/scale/site.py``: seeded, generated page by
  page, with sections, nested headings, code, tables, internal links, ``robots.txt`` and
  ``sitemap.xml``), served on loopback from a process of its own (``benchmarks/loopback.py``);
- a fresh PostgreSQL database on 127.0.0.1:5432 for the state store (``DATABASE_URL``, as on
  Heroku) and a fresh data directory for the embedded Chroma and the lexical index;
- the real ``ingest_source`` job, in that process on an ephemeral instance: a cold ingest, then
  ``--refreshes`` refreshes where nothing changed.

Recorded per size: cold and refresh wall time (and per page), peak RSS of the process the run
executes in (VmHWM; Dagster, the run and, with local embeddings, the ONNX session), PostgreSQL
bytes (``pg_total_relation_size`` of every ``pipeline_`` table: rows, TOAST and indexes) per
chunk, Chroma and lexical index bytes on disk. Per step of the cold ingest and of each refresh:
its seconds, the process's peak RSS while it ran and its RSS when it ended
(``benchmarks/step_memory.py``), printed for the cold ingest and the first refresh after the
sizes' table. ``--json FILE`` keeps the rows.

Embeddings (``--embeddings``):

- ``local``: the ONNX MiniLM model in the run process, so the cold ingest is bound by its CPU
  (about 10 chunks a page, at 10-20 chunks a second on two cores);
- ``fast``: the embeddings stand-in (``pipeline embedding-service --fast``: hashed vectors of
  Cohere's 1,024 dimensions, so storage is as with Heroku's model) at Heroku's limits, 500
  requests and 800,000 tokens a minute, which the client paces at: the pipeline and the pacing
  are measured, not a model's CPU;
- ``remote``: whatever ``EMBEDDING_URL``, ``EMBEDDING_KEY`` and ``EMBEDDING_MODEL_ID`` the
  environment names.

``--chroma-server`` puts the vectors in a Chroma server of their own on loopback (``chroma run``,
named by ``CHROMA_HOST`` and ``CHROMA_PORT`` as on Heroku) instead of the embedded store: the run
process then holds no index, and the server's own peak RSS and bytes on disk are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import sqlalchemy as sa

from benchmarks.ingest_runs import IngestRun, embedding_mode, ingest_job, write_sources
from benchmarks.loopback import serve_in_child
from benchmarks.step_memory import peak_rss_mb
from tests.commands import chroma_server_on_loopback, free_port, start_service_command, stop_service_command
from tests.conftest import fresh_postgres_database
from tests.scale.site import SyntheticDocsSite

SOURCE = "synthetic"
SEED = 16
# What the fast stand-in plays: Heroku's embedding model, its dimensions and its limits.
FAST_MODEL, FAST_DIMENSIONS, FAST_REQUESTS_PER_MINUTE, FAST_TOKENS_PER_MINUTE = (
    "cohere-embed-multilingual",
    1024,
    500,
    800_000,
)


def _directory_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def _postgres_bytes(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        total = connection.execute(
            sa.text(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND n.nspname = 'public' AND c.relname LIKE 'pipeline\\_%'"
            )
        ).scalar_one()
    engine.dispose()
    return int(total)


@contextmanager
def fast_embeddings(limits_multiplier: int) -> Iterator[None]:
    """The embeddings stand-in with --fast on loopback, named by the EMBEDDING_* variables while the
    block runs, at Heroku's limits times ``limits_multiplier``."""
    port = free_port()
    environment = {
        "EMBEDDING_URL": f"http://127.0.0.1:{port}",
        "EMBEDDING_KEY": "scale-benchmark-key",
        "EMBEDDING_MODEL_ID": FAST_MODEL,
    }
    command = [sys.executable, "-m", "pipeline.cli", "embedding-service", "--fast", "--port", str(port)]
    command += ["--dimensions", str(FAST_DIMENSIONS)]
    command += ["--requests-per-minute", str(FAST_REQUESTS_PER_MINUTE * limits_multiplier)]
    command += ["--tokens-per-minute", str(FAST_TOKENS_PER_MINUTE * limits_multiplier)]
    service = start_service_command(command, {**os.environ, **environment}, environment["EMBEDDING_URL"], quiet=True)
    os.environ.update(environment)
    try:
        yield
    finally:
        stop_service_command(service)


def _chroma_server_peak_rss_mb(directory: Path) -> float:
    """VmHWM of the ``chroma run`` process storing in ``directory`` (``chroma_server_on_loopback``'s)."""
    store = str(directory / "chroma-server").encode()
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = status.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"run" in command and store in command:
            text = status.with_name("status").read_text()
            return int(text.split("VmHWM:")[1].split()[0]) / 1024
    raise RuntimeError(f"no chroma server process storing under {directory}")


def one_size(pages: int, refreshes: int, mode: str, limits_multiplier: int, chroma_server: bool) -> dict:
    """Ingest a site of ``pages`` pages cold, refresh it, and measure (in this process)."""
    resources: dict[str, dict] = {}
    with ExitStack() as stack:
        if mode == "fast":
            stack.enter_context(fast_embeddings(limits_multiplier))
            # The client paces at the limits the stand-in enforces.
            resources["embedder"] = {
                "requests_per_minute": FAST_REQUESTS_PER_MINUTE * limits_multiplier,
                "tokens_per_minute": FAST_TOKENS_PER_MINUTE * limits_multiplier,
            }
        result = _measure(pages, refreshes, "local" if mode == "local" else "remote", resources, chroma_server)
        return {**result, "limits_multiplier": limits_multiplier if mode == "fast" else None}


def _measure(pages: int, refreshes: int, mode: str, resources: dict[str, dict], chroma_server: bool) -> dict:
    with (
        tempfile.TemporaryDirectory(prefix="scale-") as directory,
        fresh_postgres_database() as database_url,
        ExitStack() as stack,
    ):
        data_dir = Path(directory)
        os.environ.update(
            PIPELINE_DATA_DIR=str(data_dir), PIPELINE_SOURCES=str(data_dir / "sources.yaml"), DATABASE_URL=database_url
        )
        if chroma_server:
            port = stack.enter_context(chroma_server_on_loopback(data_dir))
            os.environ.update(CHROMA_HOST="127.0.0.1", CHROMA_PORT=str(port))
        embeddings = embedding_mode(mode)
        with serve_in_child(partial(SyntheticDocsSite, pages, SEED)) as base:
            site = SyntheticDocsSite(pages, SEED, base)
            # Every page and the entry pages, and nothing the sitemap does not list is left out.
            write_sources(data_dir / "sources.yaml", SOURCE, site.start_url, max_pages=pages + 100, max_depth=5)
            with ingest_job(SOURCE, resources) as run:
                cold = run()
                cold_rss = peak_rss_mb()
                refreshed = [run() for _ in range(refreshes)]
        server_rss = _chroma_server_peak_rss_mb(data_dir) if chroma_server else None
        crawl, vectors = cold.metadata["crawled_pages"], cold.metadata["vector_index"]
        chunks = vectors["collection_count"]
        postgres = _postgres_bytes(database_url)
        return {
            "pages": crawl["pages_fetched"],
            "chunks": chunks,
            "embeddings": embeddings,
            "cold_seconds": cold.seconds,
            "cold_steps": cold.steps,
            "cold_step_memory": _step_memory(cold),
            "refresh_seconds": [refresh.seconds for refresh in refreshed],
            "refresh_steps": [refresh.steps for refresh in refreshed],
            "refresh_step_memory": [_step_memory(refresh) for refresh in refreshed],
            "refresh_pages_not_modified": [r.metadata["crawled_pages"]["pages_not_modified"] for r in refreshed],
            "refresh_chunks_embedded": [r.metadata["vector_index"]["chunks_embedded"] for r in refreshed],
            "checks_passed": all(cold.checks.values()) and all(all(r.checks.values()) for r in refreshed),
            "peak_rss_mb_cold": cold_rss,
            "peak_rss_mb": peak_rss_mb(),
            "postgres_bytes": postgres,
            "postgres_bytes_per_chunk": postgres / chunks if chunks else 0.0,
            "chroma_server": chroma_server,
            "chroma_server_peak_rss_mb": server_rss,
            "chroma_bytes": _directory_bytes(data_dir / ("chroma-server" if chroma_server else "chroma")),
            "lexical_bytes": _directory_bytes(data_dir / "lexical"),
        }


def _step_memory(run: IngestRun) -> dict[str, dict[str, float]]:
    """Step key -> its peak RSS and RSS at its end (MB), in the order the steps ran."""
    return {step: {"peak_rss_mb": m.peak_rss_mb, "end_rss_mb": m.end_rss_mb} for step, m in run.memory.items()}


def _step_table(result: dict) -> list[str]:
    """Per step: seconds, peak RSS while it ran and RSS at its end, cold and in the first refresh."""
    cold, refresh = result["cold_step_memory"], (result["refresh_step_memory"] or [{}])[0]
    refresh_seconds = (result["refresh_steps"] or [{}])[0]
    lines = [
        f"{result['pages']:,} pages, {result['chunks']:,} chunks: steps in the order they ran (MB: the run process)",
        "| step | cold s | cold peak MB | cold end MB | refresh s | refresh peak MB | refresh end MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for step, memory in cold.items():
        again = refresh.get(step)
        lines.append(
            f"| {step} | {result['cold_steps'][step]:.1f} | {memory['peak_rss_mb']:.0f} | {memory['end_rss_mb']:.0f} | "
            + (
                f"{refresh_seconds[step]:.1f} | {again['peak_rss_mb']:.0f} | {again['end_rss_mb']:.0f} |"
                if again
                else "| | |"
            )
        )
    return lines


def _row(result: dict) -> str:
    pages, cold = result["pages"], result["cold_seconds"]
    refresh = min(result["refresh_seconds"], default=float("nan"))
    return (
        f"| {pages:,} | {result['chunks']:,} | {cold:.0f} s ({1000 * cold / pages:.0f} ms/page) | "
        f"{refresh:.1f} s ({1000 * refresh / pages:.2f} ms/page) | {result['peak_rss_mb']:.0f} MB | "
        f"{result['postgres_bytes'] / 1e6:.1f} MB ({result['postgres_bytes_per_chunk']:,.0f} B/chunk) | "
        f"{result['chroma_bytes'] / 1e6:.1f} MB | {result['lexical_bytes'] / 1e6:.1f} MB |"
        + (f" {server_rss:.0f} MB |" if (server_rss := result.get("chroma_server_peak_rss_mb")) else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--refreshes", type=int, default=2, help="No-change refreshes after each cold ingest.")
    parser.add_argument("--embeddings", choices=["local", "fast", "remote"], default="local")
    parser.add_argument(
        "--limits-multiplier",
        type=int,
        default=1,
        help="fast: the stand-in's and the client's limits are Heroku's times this, so that the pipeline, "
        "not the pacing, is measured [1]",
    )
    parser.add_argument(
        "--chroma-server", action="store_true", help="Vectors in a Chroma server on loopback (CHROMA_HOST)."
    )
    parser.add_argument("--json", type=Path, help="Write every size's measurements here.")
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.one_size:
        result = one_size(
            arguments.one_size,
            arguments.refreshes,
            arguments.embeddings,
            arguments.limits_multiplier,
            arguments.chroma_server,
        )
        print("RESULT " + json.dumps(result), flush=True)
        return
    results = []
    server = " Chroma server peak RSS |" if arguments.chroma_server else ""
    columns = "| pages | chunks | cold ingest | no-change refresh (best) | peak RSS | PostgreSQL | Chroma | lexical |"
    print(columns + server)
    print("|---|---|---|---|---|---|---|---|" + ("---|" if server else ""))
    for size in arguments.sizes:
        command = [sys.executable, "-W", "ignore", "-m", "benchmarks.scale", "--one-size", str(size)]
        command += ["--refreshes", str(arguments.refreshes), "--embeddings", arguments.embeddings]
        command += ["--limits-multiplier", str(arguments.limits_multiplier)]
        command += ["--chroma-server"] if arguments.chroma_server else []
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
        results.append(result)
        print(_row(result), flush=True)
        if arguments.json:
            arguments.json.write_text(json.dumps(results, indent=1))
    multiplier = f", at {arguments.limits_multiplier}x Heroku's limits" if arguments.embeddings == "fast" else ""
    print(f"embeddings: {results[0]['embeddings']}{multiplier}")
    for result in results:
        print("\n" + "\n".join(_step_table(result)))


if __name__ == "__main__":
    main()
