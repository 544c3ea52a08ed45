"""Pages → documents: the extraction stage of ingest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.extract import EXTRACTOR_VERSION, extract_document
from pipeline.store.state import StateStore


@dataclass
class ExtractReport:
    extracted: int = 0
    empty: int = 0
    deleted: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    total_documents: int = 0

    def metadata(self) -> dict[str, Any]:
        return {
            "documents_extracted": self.extracted,
            "documents_without_text": self.empty,
            "documents_deleted": self.deleted,
            "extraction_errors": len(self.errors),
            "documents_total": self.total_documents,
        }


def extract_pages(store: StateStore, source: str) -> ExtractReport:
    report = ExtractReport()
    report.deleted = store.pages.delete_orphan_documents(source)
    for url in store.pages.to_extract(source, EXTRACTOR_VERSION):
        body = store.pages.body(url)
        try:
            document = extract_document(body.html, url)
        except Exception as error:  # noqa: BLE001 - one malformed page must not stop the others
            report.errors.append((url, f"{type(error).__name__}: {error}"))
            continue
        if not document.text.strip():
            report.empty += 1
        store.pages.save_document(
            url=url,
            source=source,
            page_hash=body.content_hash,
            extractor_version=EXTRACTOR_VERSION,
            title=document.title,
            sections=[{"heading_path": list(s.heading_path), "text": s.text} for s in document.sections],
            content_hash=document.content_hash(),
        )
        report.extracted += 1
    report.total_documents = store.pages.document_count(source)
    return report
