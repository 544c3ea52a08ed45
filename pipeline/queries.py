"""The queries file: YAML (``queries: [{id, query}]`` or a bare list) or JSONL (one ``{id, query}`` per line).

It is a local path or an http(s) URL (see ``pipeline/inputs.py``); a URL whose path ends in
``.jsonl`` is read as JSONL, anything else as YAML.

Every query is checked when the file is loaded (``query_entry_problem``, shared with the
labelled sets of ``pipeline/evaluation/labels.py``): a NUL byte, another control character or an
overlong string would otherwise fail later, in PostgreSQL, the embedder or the rerank
endpoint, with an error that names neither the file nor the entry.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.inputs import display_location, is_url, location_suffix, read_input
from pipeline.store.records import Query

# A question, not a document: far beyond any real support question (a long one is a few hundred
# characters), and small next to what the reranker reads with each candidate.
MAX_QUERY_CHARACTERS = 2_000
# Line breaks and tabs are whitespace in a question written over several lines; any other control
# character is a copy-paste or encoding accident (PostgreSQL refuses NUL outright).
_WHITESPACE_CONTROLS = frozenset("\t\n\r")


class QueriesFileError(ValueError):
    """The queries file is missing or malformed; the message names the file and entry."""


def load_queries(location: str | Path) -> list[Query]:
    """The queries at a path or URL.

    Raises :class:`QueriesFileError` when the file is missing or its content is wrong, and
    :class:`~pipeline.inputs.InputUnavailable` when it cannot be read or downloaded
    (which may pass: a server error, a timeout).
    """
    if not is_url(location) and not Path(location).is_file():
        raise QueriesFileError(
            f"queries file {location} does not exist (set PIPELINE_QUERIES to a YAML or JSONL file or URL)"
        )
    text = read_input(location, setting="PIPELINE_QUERIES")
    path = display_location(location)
    entries = _jsonl_entries(path, text) if location_suffix(location) == ".jsonl" else _yaml_entries(path, text)
    queries: list[Query] = []
    seen: set[str] = set()
    for where, entry in entries:
        query = _parse_entry(path, where, entry)
        if query.query_id in seen:
            raise QueriesFileError(f"{path}: {where}: duplicate query id {query.query_id!r}")
        seen.add(query.query_id)
        queries.append(query)
    if not queries:
        raise QueriesFileError(f"{path}: no queries found")
    return queries


def _jsonl_entries(path: str, text: str) -> list[tuple[str, Any]]:
    entries = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append((f"line {line_number}", json.loads(line)))
        except json.JSONDecodeError as error:
            raise QueriesFileError(f"{path}: line {line_number}: invalid JSON ({error.msg})") from None
    return entries


def _yaml_entries(path: str, text: str) -> list[tuple[str, Any]]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise QueriesFileError(f"{path}: invalid YAML ({error})") from None
    if isinstance(document, dict):
        document = document.get("queries")
    if not isinstance(document, list):
        raise QueriesFileError(f"{path}: expected a list of queries or a mapping with a 'queries' list")
    return [(f"entry {index}", entry) for index, entry in enumerate(document, start=1)]


def _parse_entry(path: str, where: str, entry: Any) -> Query:
    if not isinstance(entry, dict):
        raise QueriesFileError(f"{path}: {where}: expected a mapping with 'id' and 'query', got {type(entry).__name__}")
    query_id, query = entry.get("id"), entry.get("query")
    problem = query_entry_problem(query_id, query)
    if problem:
        raise QueriesFileError(f"{path}: {where}: {problem}")
    # Both checked by query_entry_problem; str() tells the type checker so.
    return Query(query_id=str(query_id).strip(), query=str(query).strip())


def query_entry_problem(query_id: Any, query: Any) -> str | None:
    """What is wrong with an entry's ``id`` and ``query`` as read from a file, or None.

    The id is a non-empty string or an integer without control characters. The query, once
    stripped, is a non-empty string of at most ``MAX_QUERY_CHARACTERS`` characters with no
    control character other than a tab or a line break. Neither may hold an unpaired surrogate
    (a JSON ``\\ud800`` escape), which is no UTF-8 text.
    """
    if not isinstance(query_id, (str, int)) or isinstance(query_id, bool) or not str(query_id).strip():
        return "'id' must be a non-empty string"
    bad_character = _bad_character(str(query_id).strip(), allowed=frozenset())
    if bad_character:
        return f"'id' contains {bad_character}"
    if not isinstance(query, str) or not query.strip():
        return f"'query' must be a non-empty string (id {query_id!r})"
    query = query.strip()
    if len(query) > MAX_QUERY_CHARACTERS:
        return f"'query' is {len(query):,} characters, more than the {MAX_QUERY_CHARACTERS:,} allowed (id {query_id!r})"
    bad_character = _bad_character(query, allowed=_WHITESPACE_CONTROLS)
    if bad_character:
        return f"'query' contains {bad_character} (id {query_id!r})"
    return None


def _bad_character(text: str, *, allowed: frozenset[str]) -> str | None:
    """The first control character (other than ``allowed``) or unpaired surrogate in ``text``, described."""
    for position, character in enumerate(text, start=1):
        category = unicodedata.category(character)
        if character == "\x00":
            return f"a NUL byte at character {position}"
        if category == "Cc" and character not in allowed:
            return f"the control character U+{ord(character):04X} at character {position}"
        if category == "Cs":
            return f"an unpaired surrogate U+{ord(character):04X} at character {position}"
    return None


def queries_digest(queries: Sequence[Query]) -> str:
    """SHA-256 of the (id, query) pairs in order: equal for files that differ only in format or comments."""
    pairs = [[query.query_id, query.query] for query in queries]
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()
