"""Chunk representation study (issue 18): the same labelled questions over other chunk shapes.

    uv run python benchmarks/chunk_study.py --data DIR --labels demo|postgresql|flask --cache DIR
        [--variants sections,merged-80,...] [--seed 18] [--splits 50]

``--data`` is an ingested data directory (``scripts/demo``'s ``data/``, or
``benchmarks/ingest_postgresql.py``'s, ``--corpus flask`` for the Flask set); it is only read.
Its extracted documents are re-chunked under each variant (``pipeline.evaluation.chunk_variants``),
every embedded text is embedded with the local MiniLM through a vector cache in ``--cache`` keyed
by the sha256 of the exact text (seeded from the data directory's stored MiniLM vectors, so the
shipped chunker costs nothing), and each variant is ranked by ``pipeline.evaluation.chunk_rankings``:
dense (exact cosine search, numpy, not Chroma's HNSW), BM25 (the pipeline's lexical index over the
variant's embedded texts), hybrid (the two fused as the pipeline fuses them), dense and hybrid with
a page signal at four weights (the page's mean chunk vector, the embedding of its title and lead,
the chunk's header line, or the page's best two or three chunk scores among the query's
candidates), hybrid with at most three chunks a page; the hybrid candidates (plain, with the mean
and best-three page signals, capped) reranked in-process by the local rerank stand-in's scorer
(header lines embedded through the same cache) and packed into the final context-set order, and
the plain reranked candidates ordered again with their page's support among them.

Page-level nDCG@10, MRR@10 and Recall@50 (``pipeline.evaluation.metrics``) are printed on two
seeded halves of the questions: pick a variant on the selection half, report it on the other.
Each page-signal family's weight is chosen on the selection half and reported on the other. Last,
``pipeline.evaluation.held_out`` repeats each choice over ``--splits`` seeded splits, both ways
round, and prints the mean gain over the first variant's plain ranking on the questions not chosen on.
The cache is written batch by batch, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import fmean

import numpy as np
from bs4 import BeautifulSoup
from corpora import LABELS

from pipeline.chunking import header_line
from pipeline.embedding import MODEL_NAME, MiniLMEmbedder
from pipeline.evaluation.chunk_rankings import (
    PAGE_WEIGHTS,
    RETRIEVAL,
    ChunkRankings,
    capped_name,
    final_orders,
    page_families,
    rerank_page_support,
    reranked,
    retrieval_rankings,
)
from pipeline.evaluation.chunk_variants import VARIANTS, WHOLE_PAGE_VARIANTS, Fits, VariantChunk
from pipeline.evaluation.held_out import chosen, halves, held_out_gain
from pipeline.evaluation.labels import LabelledSet, load_labelled_set, pages_in_order
from pipeline.evaluation.metrics import METRICS, Evaluation, evaluate_rankings
from pipeline.evaluation.page_signal import (
    PageSupport,
    PageVectors,
    lead_text,
    mean_page_vectors,
    page_rows,
    page_vectors_by_url,
)
from pipeline.extract import Document, Section, extract_document
from pipeline.ingest.chunks import chunk_fits
from pipeline.local.scoring import LocalRelevanceScorer, header_of
from pipeline.stand_ins import local_scorer
from pipeline.store.chunks import text_hash
from pipeline.store.embeddings import pack_embedding, unpack_embedding
from pipeline.store.lexical import LexicalIndex
from pipeline.tables import markdown_table

# Second scores fused into dense scores: the page's mean or lead vector, the chunk's own header line,
# or the page's best two or three chunk scores among the candidates.
PAGE_VECTORS = ("mean", "lead", "head", "top2", "top3")
# Candidate rankings reranked by the local scorer and packed: plain hybrid, then hybrid with the mean
# page signal and with the page's best three chunk scores.
RERANKED = ("hybrid", *page_families(("mean",))["hybrid+mean"], *page_families(("top3",))["hybrid+top3"])
# Hybrid candidates with at most this many chunks of a page, so they reach more pages; reranked and packed too.
CANDIDATE_CAP = 3
RERANKED += tuple(
    capped_name(ranking, CANDIDATE_CAP) for ranking in ("hybrid", *page_families(("top3",))["hybrid+top3"])
)
HALVES = ("selection", "report", "all")
Metrics = dict[str, float]


def read_only(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True)


def stored_documents(data_dir: Path, page_text: bool) -> Iterator[tuple[Document, str | None]]:
    """The data directory's documents, in URL order, extracted again from the stored pages, each with
    the whole page's text (navigation included, as ``get_text`` gives it) when ``page_text``, else None.

    Extracting again gives what the stored documents do not keep (a variant may read more of the
    page); the sections must come out as stored, or the study would not be measuring the pipeline's text.
    """
    with closing(read_only(data_dir / "state.db")) as connection:
        rows = connection.execute(
            "SELECT d.url, d.title, d.sections, p.html_zlib FROM pipeline_documents d"
            " JOIN pipeline_pages p ON p.url = d.url ORDER BY d.url"
        )
        for url, title, sections, html_zlib in rows:
            html = zlib.decompress(html_zlib).decode("utf-8")
            document = extract_document(html, url)
            stored = tuple(Section(tuple(s["heading_path"]), s["text"]) for s in json.loads(sections))
            if (document.title, document.sections) != (title, stored):
                raise SystemExit(f"{url}: extracting the stored page again does not give the stored document")
            yield document, BeautifulSoup(html, "lxml").get_text(" ", strip=True) if page_text else None


class VectorCache:
    """MiniLM vectors by sha256 of the exact embedded text, in one SQLite file per model."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(directory / f"{MODEL_NAME}.sqlite")
        self.connection.execute("CREATE TABLE IF NOT EXISTS vectors (text_hash TEXT PRIMARY KEY, embedding BLOB)")

    def seed(self, data_dir: Path) -> int:
        """Copy the data directory's stored MiniLM vectors in; returns how many were new."""
        before = self.count()
        with closing(read_only(data_dir / "state.db")) as source:
            rows = source.execute("SELECT text_hash, embedding FROM pipeline_vectors WHERE model = ?", (MODEL_NAME,))
            self.connection.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)", rows)
        self.connection.commit()
        return self.count() - before

    def count(self) -> int:
        return int(self.connection.execute("SELECT count(*) FROM vectors").fetchone()[0])

    def vectors(self, texts: Sequence[str], embedder: MiniLMEmbedder) -> tuple[np.ndarray, int, float]:
        """(vectors of ``texts`` in order, texts embedded now, seconds spent embedding them)."""
        hashes = [text_hash(text) for text in texts]
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), 500):
            batch = unique[start : start + 500]
            marks = ",".join("?" * len(batch))
            query = f"SELECT text_hash, embedding FROM vectors WHERE text_hash IN ({marks})"
            found.update((digest, unpack_embedding(blob)) for digest, blob in self.connection.execute(query, batch))
        missing = list(
            {digest: text for digest, text in zip(hashes, texts, strict=True) if digest not in found}.items()
        )
        started = time.perf_counter()
        for positions, batch_vectors in embedder.iter_batches([text for _, text in missing]):
            rows = [(missing[p][0], pack_embedding(v)) for p, v in zip(positions, batch_vectors, strict=True)]
            self.connection.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)", rows)
            self.connection.commit()
            found.update((digest, unpack_embedding(blob)) for digest, blob in rows)
        seconds = time.perf_counter() - started
        return np.stack([found[digest] for digest in hashes]), len(missing), seconds


class CachedVectors:
    """The vector cache as the local scorer's known vectors: every text it asks for, embedded once if new."""

    def __init__(self, cache: VectorCache, embedder: MiniLMEmbedder) -> None:
        self.cache = cache
        self.embedder = embedder

    def lookup(self, texts: Mapping[bytes, str]) -> dict[bytes, np.ndarray]:
        vectors, _, _ = self.cache.vectors(list(texts.values()), self.embedder)
        return dict(zip(texts, vectors, strict=True))


def page_evaluation(
    chunks: Sequence[VariantChunk], ranked: Mapping[str, Sequence[str]], labels: LabelledSet
) -> Evaluation:
    """Every question's page-level metrics of the chunk rankings."""
    pages = {
        query_id: pages_in_order((chunks[int(c)].url for c in ranking), labels.base_url)
        for query_id, ranking in ranked.items()
    }
    return evaluate_rankings(labels.qrels, pages)


def half_means(evaluation: Evaluation, questions: set[str]) -> Metrics:
    return {metric: fmean(evaluation.per_query[q][metric] for q in questions) for metric in METRICS}


def lead_vectors(
    documents: Sequence[Document], fits: Fits, cache: VectorCache, embedder: MiniLMEmbedder
) -> tuple[dict[str, np.ndarray], int, float]:
    """URL → the embedding of the page's title and lead, texts embedded now, seconds."""
    leads = {document.url: text for document in documents if (text := lead_text(document, fits)) is not None}
    vectors, embedded, seconds = cache.vectors(list(leads.values()), embedder)
    return dict(zip(leads, vectors, strict=True)), embedded, seconds


@dataclass
class VariantRun:
    chunks: list[VariantChunk]
    rankings: dict[str, ChunkRankings]
    embedded: int  # chunk texts embedded now
    seconds: float
    headers_embedded: int  # header lines the scorer needed, embedded now
    header_seconds: float


def run_variant(
    chunks: list[VariantChunk],
    labels: LabelledSet,
    cache: VectorCache,
    embedder: MiniLMEmbedder,
    scorer: LocalRelevanceScorer,
    leads: Mapping[str, np.ndarray],
) -> VariantRun:
    vectors, embedded, seconds = cache.vectors([chunk.embedding_text for chunk in chunks], embedder)
    queries = {query.query_id: query.query for query in labels.queries}
    urls = [chunk.url for chunk in chunks]
    chunk_pages = page_rows(urls)[1]
    # A chunk's header line (``Title > H2 > H3``) as a vector of its own: the distinct lines take the
    # place of pages in PageVectors, so the fusion is page_signal's with the header's similarity.
    header_lines, header_rows = page_rows([header_of(chunk.embedding_text, header_line) for chunk in chunks])
    header_vectors, _, _ = cache.vectors(list(header_lines), embedder)
    page_vectors = {
        "mean": mean_page_vectors(urls, vectors),
        "lead": page_vectors_by_url(urls, leads, vectors.shape[1]),
        "head": PageVectors(header_lines, header_vectors, header_rows),
        "top2": PageSupport(chunk_pages, best=2),
        "top3": PageSupport(chunk_pages, best=3),
    }
    with tempfile.TemporaryDirectory() as scratch:
        lexical = LexicalIndex(scratch)
        with lexical.locked():
            lexical.rebuild((str(position), "study", chunk.embedding_text) for position, chunk in enumerate(chunks))
        ranked = retrieval_rankings(
            queries,
            embedder.embed_queries(list(queries.values())),
            vectors,
            lambda query, depth: [hit.chunk_id for hit in lexical.search(query, depth)],
            page_vectors,
            chunk_pages=chunk_pages.tolist(),
            caps=(CANDIDATE_CAP,),
        )
    # The scorer's heading_dense feature embeds each candidate's header line: embed them in one batch.
    candidates = {chunk_id for stage in RERANKED for ranking in ranked[stage].values() for chunk_id in ranking}
    headers = sorted({header_of(chunks[int(chunk_id)].embedding_text, header_line) for chunk_id in candidates})
    _, headers_embedded, header_seconds = cache.vectors(headers, embedder)
    for stage in RERANKED:
        suffix = "" if stage == "hybrid" else f" ({stage})"
        ranked[f"reranked{suffix}"], scores = reranked(queries, ranked[stage], chunks, scorer.score)
        ranked[f"final{suffix}"] = final_orders(ranked[f"reranked{suffix}"], scores, chunks)
        if stage == "hybrid":
            for best in (2, 3):
                for weight in PAGE_WEIGHTS:
                    order, supported = rerank_page_support(ranked["reranked"], scores, chunk_pages, best, weight)
                    ranked[f"final (rerank+top{best}@{weight:g})"] = final_orders(order, supported, chunks)
    return VariantRun(chunks, ranked, embedded, seconds, headers_embedded, header_seconds)


def print_tables(
    results: Mapping[str, Mapping[str, Evaluation]], costs: Mapping[str, list[str]], split: dict[str, set]
) -> None:
    """results: variant → ranking → every question's metrics; costs: variant → its chunks and embedding columns."""
    columns = ["variant", "chunks", "embedded / s", "ranking", *METRICS]
    for half in HALVES:
        table = [
            [variant, *costs[variant], ranking, *(f"{v:.3f}" for v in half_means(evaluation, split[half]).values())]
            for variant, by_ranking in results.items()
            for ranking, evaluation in by_ranking.items()
        ]
        title = f"{half} half ({len(split[half])} questions)" if half != "all" else f"all {len(split[half])} questions"
        print(f"\n{title}:")
        print(markdown_table(columns, table, right_aligned=["chunks", "embedded / s", *METRICS]))
    rows = []
    for variant, by_ranking in results.items():
        ndcg = {ranking: ndcg_by_question(evaluation) for ranking, evaluation in by_ranking.items()}
        for family, members in page_families(PAGE_VECTORS).items():
            best = chosen(ndcg, members, split["selection"])
            plain = half_means(by_ranking[family.split("+")[0]], split["report"])
            report = half_means(by_ranking[best], split["report"])
            rows.append(
                [
                    variant,
                    family,
                    best.partition("@")[2],
                    f"{half_means(by_ranking[best], split['selection'])['ndcg@10']:.3f}",
                    *(f"{value:.3f}" for value in report.values()),
                    f"{report['ndcg@10'] - plain['ndcg@10']:+.3f}",
                ]
            )
    print("\npage signal, weight chosen on the selection half (nDCG@10), reported on the report half:")
    report_columns = [f"report {metric}" for metric in METRICS]
    print(
        markdown_table(
            ["variant", "family", "weight", "selection ndcg@10", *report_columns, "report ndcg@10 vs plain"],
            rows,
            right_aligned=["weight", "selection ndcg@10", *report_columns, "report ndcg@10 vs plain"],
        )
    )


def ndcg_by_question(evaluation: Evaluation) -> dict[str, float]:
    return {query_id: metrics["ndcg@10"] for query_id, metrics in evaluation.per_query.items()}


def print_held_out(results: Mapping[str, Mapping[str, Evaluation]], baseline: str, splits: int) -> None:
    """For each stage: choose the best of every variant's rankings of that stage (page signals and weights
    included) on one half, measure it against ``baseline``'s plain ranking on the other, over ``splits`` seeded
    splits both ways round."""
    ndcg = {
        f"{variant} {ranking}": ndcg_by_question(evaluation)
        for variant, by_ranking in results.items()
        for ranking, evaluation in by_ranking.items()
    }
    rows = []
    for stage in ("dense", "hybrid", "final"):
        stage_rankings = [
            f"{variant} {ranking}"
            for variant, by_ranking in results.items()
            for ranking in by_ranking
            if ranking == stage or ranking.startswith((f"{stage}+", f"{stage} (", f"{stage}/"))
        ]
        for label, candidates in (
            (f"{stage}, any variant or page signal", stage_rankings),
            *((f"{stage}, {variant} plain", [f"{variant} {stage}"]) for variant in results),
            *(
                (f"{family}, {variant}, weight chosen", [f"{variant} {member}" for member in members])
                for variant in results
                for family, members in page_families(PAGE_VECTORS).items()
                if family.startswith(f"{stage}+")
            ),
        ):
            gain = held_out_gain(ndcg, candidates, f"{baseline} {stage}", splits)
            picks = ", ".join(f"{name} {count}" for name, count in list(gain.picks.items())[:3])
            rows.append([label, f"{gain.mean:+.3f}", f"{gain.spread:.3f}", picks])
    print(
        f"\nheld out: nDCG@10 gained over {baseline}'s plain ranking of the stage, on the half not chosen on "
        f"({splits} seeded splits, both ways round):"
    )
    print(markdown_table(["choice", "mean gain", "spread (sd)", "most chosen"], rows, right_aligned=["mean gain"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="an ingested data directory (only read)")
    parser.add_argument("--labels", choices=sorted(LABELS), required=True)
    parser.add_argument("--cache", type=Path, required=True, help="directory of the vector cache")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=18, help="seed of the selection/report split")
    parser.add_argument("--splits", type=int, default=50, help="seeded splits of the held-out estimate")
    arguments = parser.parse_args()
    names = arguments.variants.split(",")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants: {', '.join(unknown)}")
    labels = load_labelled_set(LABELS[arguments.labels])
    split = halves((query.query_id for query in labels.queries), arguments.seed)
    embedder = MiniLMEmbedder()
    fits = chunk_fits(embedder.word_piece_counts)
    cache = VectorCache(arguments.cache)
    seeded = cache.seed(arguments.data)
    scorer = local_scorer(embedder, known_vectors=CachedVectors(cache, embedder))
    # Only a whole-page variant needs the page's text, which costs a second parse of every page.
    pages = list(stored_documents(arguments.data, page_text=not WHOLE_PAGE_VARIANTS.isdisjoint(names)))
    documents = [document for document, _ in pages]
    # Variants over the whole page's text see one section: the page's text as a browser's select-all copies it.
    whole_pages = [replace(document, sections=(Section((), text),)) for document, text in pages if text is not None]
    print(
        f"{arguments.labels}: {len(documents)} documents, {len(labels.queries)} questions "
        f"(selection {len(split['selection'])}, report {len(split['report'])}, seed {arguments.seed}); "
        f"cache {cache.count()} vectors, {seeded} new from the data directory",
        flush=True,
    )
    leads, embedded, seconds = lead_vectors(documents, fits, cache, embedder)
    print(f"page leads: {len(leads)} pages, {embedded} texts embedded in {seconds:.0f} s", flush=True)
    results: dict[str, dict[str, Evaluation]] = {}
    costs: dict[str, list[str]] = {}
    for name in names:
        started = time.perf_counter()
        inputs = whole_pages if name in WHOLE_PAGE_VARIANTS else documents
        chunks = [chunk for document in inputs for chunk in VARIANTS[name](document, fits)]
        chunking_seconds = time.perf_counter() - started
        run = run_variant(chunks, labels, cache, embedder, scorer, leads)
        print(
            f"{name}: {len(chunks)} chunks (chunked in {chunking_seconds:.0f} s), "
            f"{run.embedded} texts embedded in {run.seconds:.0f} s, "
            f"{run.headers_embedded} header lines for the scorer in {run.header_seconds:.0f} s",
            flush=True,
        )
        costs[name] = [str(len(chunks)), f"{run.embedded} / {run.seconds:.0f}"]
        order = [*RETRIEVAL, "reranked", "final", *(r for f in page_families(PAGE_VECTORS).values() for r in f)]
        hybrids = [
            "hybrid",
            *(r for f, members in page_families(PAGE_VECTORS).items() if f.startswith("hybrid") for r in members),
        ]
        order += [capped_name(ranking, CANDIDATE_CAP) for ranking in hybrids]
        order += [f"{stage} ({candidates})" for candidates in RERANKED[1:] for stage in ("reranked", "final")]
        order += [f"final (rerank+top{best}@{weight:g})" for best in (2, 3) for weight in PAGE_WEIGHTS]
        results[name] = {ranking: page_evaluation(chunks, run.rankings[ranking], labels) for ranking in order}
    print_tables(results, costs, split)
    print_held_out(results, names[0], arguments.splits)


if __name__ == "__main__":
    main()
