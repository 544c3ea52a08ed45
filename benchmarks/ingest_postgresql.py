"""Ingest the PostgreSQL 15 manual (Debian ``postgresql-doc-15``), then refresh it twice, all in one run.

    uv run python benchmarks/ingest_postgresql.py DATA_DIR [--cold-only | --upgrade] [--corpus flask]

Serves a copy of ``/usr/share/doc/postgresql-doc-15/html`` on 127.0.0.1:18900 (the base URL
the labelled set's paths are relative to) and runs the ``ingest_source`` job for one source,
``postgresql``, exactly as the Dagster UI would:

1. cold ingest: wall clock, pages/s, chunks/s, peak RSS of this process (the run executes in it),
   each step's time, and what hybrid retrieval and the local scorer add (lexical index, header
   embeddings) as a share of embedding the chunks;
2. embed-only: the same chunk texts embedded again in a fresh process (``--embed-only``), nothing
   else, so cold ingest is reported as a ratio of the physical floor measured in the same run, and
   that process's model does not count towards the ingest's peak RSS;
3. no-change refresh: wall clock as a share of cold, chunks re-embedded;
4. one page modified and another deleted: which chunk IDs changed, checked against exactly those
   two pages.

``--corpus flask`` ingests the Flask 2.2 docs (Debian ``python-flask-doc``, served on
127.0.0.1:18901, the base of ``benchmarks/labels/flask22.yaml``'s paths) instead, cold only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

# corpus → (the pages, the loopback port its labelled set's paths are relative to)
CORPORA = {
    "postgresql": (Path("/usr/share/doc/postgresql-doc-15/html"), 18900),
    "flask": (Path("/usr/share/doc/python-flask-doc/html"), 18901),
}
MODIFIED_PAGE = "sql-createtable.html"
DELETED_PAGE = "sql-createview.html"


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Unlike ``ru_maxrss``, which a child started
    with ``subprocess`` inherits from its parent across fork and exec, it starts afresh per process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def embed_only(data_dir: Path) -> None:
    """Embed every stored chunk of the source with a fresh embedder and nothing else."""
    from pipeline.embedding import MiniLMEmbedder
    from pipeline.store.state import StateStore, sqlite_url

    texts = [chunk.embedding_text for chunk in StateStore(sqlite_url(data_dir)).chunks.iterate("postgresql")]
    started = time.perf_counter()
    MiniLMEmbedder().embed(texts)
    print(f"{len(texts)} {time.perf_counter() - started} {_peak_rss_mb()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="An empty or new directory: the first ingest must be cold.")
    parser.add_argument("--max-pages", type=int, default=2000, help="Cap the crawl (a quick trial of the script).")
    parser.add_argument(
        "--cold-only",
        action="store_true",
        help="Stop after the cold ingest: a data directory for benchmarks/answer_quality.py and quality.py.",
    )
    parser.add_argument(
        "--upgrade",
        action="store_true",
        help="Refresh a directory an earlier release ingested, once, and print what the current code re-chunked "
        "and re-embedded (a new chunker version re-chunks every page).",
    )
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="postgresql", help="which docs to ingest")
    parser.add_argument("--embed-only", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    corpus_dir, port = CORPORA[arguments.corpus]
    if arguments.corpus != "postgresql" and not arguments.cold_only:
        parser.error(f"--corpus {arguments.corpus} needs --cold-only: the refreshes edit PostgreSQL pages")
    data_dir = arguments.data_dir.resolve()
    if arguments.embed_only:
        embed_only(data_dir)
        return
    if arguments.upgrade and not (data_dir / "state.db").exists():
        parser.error(f"{data_dir} holds no ingest (state.db) to upgrade")
    if not arguments.upgrade and (data_dir / "state.db").exists():
        parser.error(f"{data_dir} already holds an ingest (state.db); pass a new directory for a cold run")
    data_dir.mkdir(parents=True, exist_ok=True)
    sources = data_dir / "sources.yaml"
    os.environ["PIPELINE_DATA_DIR"] = str(data_dir)
    os.environ["PIPELINE_SOURCES"] = str(sources)

    import dagster as dg

    from pipeline.definitions import defs
    from pipeline.defs.jobs import ingest_source_job
    from pipeline.defs.partitions import register_sources
    from pipeline.demo import serve_directory
    from pipeline.store.state import StateStore, sqlite_url

    site = data_dir / "site"
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(corpus_dir, site)
    with serve_directory(site, port=port) as url:
        source = {
            "name": arguments.corpus,
            "start_urls": [url + "index.html"],
            "allow_private_hosts": True,
            "max_pages": arguments.max_pages,
            "max_depth": 10,
        }
        sources.write_text(yaml.safe_dump({"sources": [source]}))
        with dg.DagsterInstance.ephemeral() as instance:
            register_sources(instance, [arguments.corpus])
            job = defs.resolve_job_def(ingest_source_job.name)

            def ingest() -> tuple[float, dict[str, dict], dict[str, float]]:
                started = time.perf_counter()
                result = job.execute_in_process(
                    instance=instance,
                    partition_key=arguments.corpus,
                    run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                )
                elapsed = time.perf_counter() - started
                steps = {
                    step.step_key: step.end_time - step.start_time
                    for step in instance.get_run_step_stats(result.run_id)
                }
                metadata = {
                    event.asset_key.to_user_string(): {
                        key: value.value for key, value in event.materialization.metadata.items()
                    }
                    for event in result.get_asset_materialization_events()
                }
                return elapsed, metadata, steps

            if arguments.upgrade:
                seconds, metadata, _ = ingest()
                chunks, index = metadata["document_chunks"], metadata["vector_index"]
                extracted = metadata["extracted_documents"]["documents_extracted"]
                print(
                    f"upgrade refresh: {seconds:.1f} s; documents re-extracted {extracted}, "
                    f"re-chunked {chunks['documents_chunked']}; chunks added {chunks['chunks_added']}, "
                    f"removed {chunks['chunks_removed']}, now {chunks['chunks_total']}; "
                    f"texts embedded {index['texts_embedded']} in {index['embed_seconds']:.1f} s; "
                    f"pages not modified {metadata['crawled_pages']['pages_not_modified']}"
                )
                return
            cold, metadata, step_seconds = ingest()
            cold_rss = _peak_rss_mb()
            crawl, index = metadata["crawled_pages"], metadata["vector_index"]
            print(
                f"cold ingest: {cold:.1f} s, {crawl['pages_fetched']} pages ({crawl['pages_fetched'] / cold:.2f}/s), "
                f"{index['chunks_embedded']} chunks ({index['chunks_embedded'] / cold:.2f}/s), "
                f"peak RSS {cold_rss:.0f} MB"
            )
            for step_key, seconds in step_seconds.items():
                print(f"  step {step_key}: {seconds:.1f} s")
            for asset, values in metadata.items():
                print(f"  {asset}: {values}")
            lexical = step_seconds["lexical_index"]
            chunk_seconds, headers = index["embed_seconds"], index["header_embed_seconds"]
            print(
                f"chunk embedding {chunk_seconds:.1f} s; "
                f"lexical index {lexical:.1f} s = {100 * lexical / chunk_seconds:.2f} % of it; "
                f"header lines {headers:.1f} s = {100 * headers / chunk_seconds:.2f} % of it"
            )
            if arguments.cold_only:
                return

            store = StateStore(sqlite_url(data_dir))
            before = {chunk.chunk_id: chunk.url for chunk in store.chunks.iterate("postgresql")}
            output = subprocess.run(
                [sys.executable, __file__, str(data_dir), "--embed-only"], check=True, capture_output=True, text=True
            ).stdout.split()
            count, embed_seconds, embed_rss = int(output[0]), float(output[1]), float(output[2])
            print(
                f"embed-only, the same {count} chunks in a fresh process: {embed_seconds:.1f} s, peak RSS "
                f"{embed_rss:.0f} MB; cold ingest = {cold / embed_seconds:.3f} x embed-only (target <= 1.15)"
            )

            unchanged, metadata, _ = ingest()
            print(
                f"no-change refresh: {unchanged:.1f} s = {100 * unchanged / cold:.2f} % of cold (target <= 5 %); "
                f"chunks embedded {metadata['vector_index']['chunks_embedded']} (target 0); "
                f"pages not modified {metadata['crawled_pages']['pages_not_modified']}"
            )

            page = site / MODIFIED_PAGE
            page.write_text(
                page.read_text().replace(
                    "</body>", "<p>Benchmark edit: one new paragraph about tablespaces.</p></body>"
                )
            )
            (site / DELETED_PAGE).unlink()
            changed, metadata, _ = ingest()
            after = {chunk.chunk_id: chunk.url for chunk in store.chunks.iterate("postgresql")}
            removed = {before[i] for i in before.keys() - after.keys()}
            added = {after[i] for i in after.keys() - before.keys()}
            expected = {url + MODIFIED_PAGE, url + DELETED_PAGE}
            print(
                f"after modifying {MODIFIED_PAGE} and deleting {DELETED_PAGE}: {changed:.1f} s; "
                f"chunks removed {len(before.keys() - after.keys())} from {sorted(removed)}, "
                f"added {len(after.keys() - before.keys())} from {sorted(added)}; "
                f"only those pages: {removed <= expected and added <= {url + MODIFIED_PAGE}}; "
                f"crawl {metadata['crawled_pages']}"
            )


if __name__ == "__main__":
    main()
