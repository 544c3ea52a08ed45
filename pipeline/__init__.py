"""Docs-to-answer pipeline: crawl docs, chunk into Chroma, retrieve, rerank, publish ranked context sets."""
