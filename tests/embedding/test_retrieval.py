"""Dense retrieval through any Embedder: questions go as search_query, passages were indexed as search_document."""

from __future__ import annotations

from pipeline.embedding.contract import SEARCH_DOCUMENT, SEARCH_QUERY
from pipeline.retrieve import dense_candidates
from pipeline.store.records import Query
from pipeline.store.vectors import ChromaConnection, VectorIndex

PASSAGES = {
    "pool": "Connection pooling reuses open database connections.",
    "vacuum": "VACUUM reclaims storage occupied by dead tuples.",
    "deadlock": "SQLSTATE 40P01: two transactions wait on each other's locks.",
}


def test_dense_candidates_embed_questions_as_queries_with_the_remote_embedder(tmp_path, make_embedder, contract_server):
    embedder = make_embedder()
    ids = list(PASSAGES)
    vectors = VectorIndex(ChromaConnection(data_dir=str(tmp_path), collection="remote_test"), embedder.model)
    for positions, batch in embedder.iter_document_batches([PASSAGES[chunk_id] for chunk_id in ids]):
        vectors.upsert(
            [ids[p] for p in positions],
            batch,
            [PASSAGES[ids[p]] for p in positions],
            [{"source": "docs"}] * len(positions),
        )

    # The server embeds a question near the passage of the same text (its vectors depend mostly on the text).
    found = dense_candidates(
        [Query("q1", PASSAGES["vacuum"]), Query("q2", PASSAGES["deadlock"])], vectors, embedder, k=2
    )

    assert [hit.chunk_id for hit in found["q1"]][0] == "vacuum"
    assert [hit.chunk_id for hit in found["q2"]][0] == "deadlock"
    assert [request.input_type for request in contract_server.received] == [SEARCH_DOCUMENT, SEARCH_QUERY]
