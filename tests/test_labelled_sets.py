"""Validate the labelled query sets under benchmarks/labels/.

The format is described in benchmarks/labels/README.md. `validate_label_file`
is corpus-agnostic: a label file only has to name its corpus directory, so the
demo site's labels (paths relative to the rendered demo site root) can be checked by
the same code.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS_DIR = REPO_ROOT / "benchmarks" / "labels"

# Corpus name (the `corpus:` key of a label file) -> directory that `path` is relative to.
CORPUS_DIRS: dict[str, Path] = {
    "postgresql-doc-15": Path("/usr/share/doc/postgresql-doc-15/html"),
    "python-flask-doc": Path("/usr/share/doc/python-flask-doc/html"),
}
CORPUS_INSTALL_HINTS: dict[str, str] = {
    "postgresql-doc-15": "install it with: apt-get install -y postgresql-doc-15",
    "python-flask-doc": "install it with: apt-get install -y python-flask-doc",
}

MIN_QUERIES = 50
VALID_GRADES = frozenset({1, 2})
ANSWER_GRADE = 2


class _TextExtractor(HTMLParser):
    """Collects the visible text of an HTML page (script and style bodies skipped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip_depth:
            self._skip_depth -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def _squash(text: str) -> str:
    """Whitespace-free, lower-cased form used to match evidence against page text.

    Evidence is copied from rendered text, where inline markup adds or drops
    spaces (`pg_relation_size ( relation )`), so whitespace is ignored entirely.
    """
    return re.sub(r"\s+", "", text).lower()


def _page_text(page: Path) -> str:
    extractor = _TextExtractor()
    extractor.feed(page.read_text(encoding="utf-8", errors="replace"))
    extractor.close()
    return _squash("".join(extractor.parts))


def _check_relevant(
    where: str, item: object, corpus_dir: Path, page_cache: dict[Path, str]
) -> tuple[list[str], str | None, int | None]:
    """Check one `relevant` entry; returns (problems, path, grade)."""
    if not isinstance(item, dict):
        return [f"{where}: relevant entry must be a mapping, got {item!r}"], None, None
    problems: list[str] = []
    rel_path = item.get("path")
    grade = item.get("grade")
    # bool is an int subclass; `grade: true` must not pass as grade 1.
    if isinstance(grade, bool) or grade not in VALID_GRADES:
        problems.append(f"{where}: grade must be one of {sorted(VALID_GRADES)}, got {grade!r}")
        grade = None
    if not isinstance(rel_path, str) or not rel_path.strip():
        problems.append(f"{where}: path must be a non-empty string, got {rel_path!r}")
        return problems, None, grade
    pure = PurePosixPath(rel_path)
    if pure.is_absolute() or ".." in pure.parts:
        problems.append(f"{where}: path {rel_path!r} must be relative to the corpus directory")
        return problems, rel_path, grade
    page = corpus_dir / pure
    if not page.is_file():
        problems.append(f"{where}: path {rel_path!r} does not exist in {corpus_dir}")
        return problems, rel_path, grade
    evidence = item.get("evidence")
    if evidence is not None:
        if not isinstance(evidence, str) or not _squash(evidence):
            problems.append(f"{where}: evidence must be a non-empty string, got {evidence!r}")
        else:
            if page not in page_cache:
                page_cache[page] = _page_text(page)
            if _squash(evidence) not in page_cache[page]:
                problems.append(f"{where}: evidence {evidence!r} not found in the text of {rel_path}")
    return problems, rel_path, grade


def validate_label_file(path: Path, corpus_dir: Path, min_queries: int = MIN_QUERIES) -> list[str]:
    """Return every problem found in a label file (empty list = valid).

    Checks: unique ids, non-empty query text, every relevant path exists under
    `corpus_dir`, grades in {1, 2}, at least one grade-2 page per query, no page
    listed twice for one query, optional `evidence` present in the page text,
    and at least `min_queries` queries.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        return [f"{path}: not valid YAML: {exc}"]
    if not isinstance(data, dict):
        return [f"{path}: top level must be a mapping with 'corpus' and 'queries'"]
    problems: list[str] = []
    if not isinstance(data.get("corpus"), str) or not data["corpus"].strip():
        problems.append(f"{path}: 'corpus' must name the corpus, got {data.get('corpus')!r}")
    queries = data.get("queries")
    if not isinstance(queries, list):
        return problems + [f"{path}: 'queries' must be a list"]
    if len(queries) < min_queries:
        problems.append(f"{path}: has {len(queries)} queries, at least {min_queries} required")

    seen_ids: set[str] = set()
    page_cache: dict[Path, str] = {}
    for index, query in enumerate(queries):
        where = f"{path}: queries[{index}]"
        if not isinstance(query, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        qid = query.get("id")
        if not isinstance(qid, str) or not qid.strip():
            problems.append(f"{where}: id must be a non-empty string, got {qid!r}")
        else:
            where = f"{path}: {qid}"
            if qid in seen_ids:
                problems.append(f"{where}: duplicate id")
            seen_ids.add(qid)
        text = query.get("query")
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}: query text must be a non-empty string, got {text!r}")
        relevant = query.get("relevant")
        if not isinstance(relevant, list) or not relevant:
            problems.append(f"{where}: relevant must be a non-empty list")
            continue
        paths_seen: set[str] = set()
        grades: list[int] = []
        for item in relevant:
            item_problems, rel_path, grade = _check_relevant(where, item, corpus_dir, page_cache)
            problems.extend(item_problems)
            if rel_path is not None:
                if rel_path in paths_seen:
                    problems.append(f"{where}: path {rel_path!r} listed more than once")
                paths_seen.add(rel_path)
            if grade is not None:
                grades.append(grade)
        if ANSWER_GRADE not in grades:
            problems.append(f"{where}: needs at least one grade-{ANSWER_GRADE} (answering) page")
    return problems


def _corpus_dir_for(label_file: Path) -> Path:
    data = yaml.safe_load(label_file.read_text(encoding="utf-8"))
    corpus = data.get("corpus") if isinstance(data, dict) else None
    if corpus not in CORPUS_DIRS:
        pytest.fail(f"{label_file}: unknown corpus {corpus!r}; known corpora: {sorted(CORPUS_DIRS)}")
    corpus_dir = CORPUS_DIRS[corpus]
    if not corpus_dir.is_dir():
        hint = CORPUS_INSTALL_HINTS.get(corpus, "")
        pytest.fail(f"corpus directory {corpus_dir} for {corpus!r} is missing; {hint}")
    return corpus_dir


LABEL_FILES = sorted(LABELS_DIR.glob("*.yaml")) + sorted(LABELS_DIR.glob("*.yml"))


def test_labels_directory_has_label_files() -> None:
    assert LABEL_FILES, f"no label files (*.yaml) found in {LABELS_DIR}"


@pytest.mark.parametrize("label_file", LABEL_FILES, ids=lambda p: p.name)
def test_label_file_is_valid(label_file: Path) -> None:
    problems = validate_label_file(label_file, _corpus_dir_for(label_file))
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_validator_accepts_well_formed_file(tmp_path: Path) -> None:
    corpus = tmp_path / "site"
    _write(corpus / "a.html", "<html><body><p>Use <code>VACUUM</code>\n  FULL to shrink.</p></body></html>")
    _write(corpus / "guide/b.html", "<p>Background</p>")
    labels = _write(
        tmp_path / "labels.yaml",
        """
corpus: tiny
queries:
  - id: q1
    query: "table file did not shrink"
    relevant:
      - {path: "a.html", grade: 2, evidence: "use vacuum full"}
      - {path: "guide/b.html", grade: 1}
  - id: q2
    query: "background reading"
    relevant:
      - {path: "guide/b.html", grade: 2}
""",
    )
    assert validate_label_file(labels, corpus, min_queries=2) == []


def test_validator_reports_each_kind_of_problem(tmp_path: Path) -> None:
    corpus = tmp_path / "site"
    _write(corpus / "a.html", "<p>real text</p><script>hidden words</script>")
    labels = _write(
        tmp_path / "labels.yaml",
        """
corpus: tiny
queries:
  - id: dup
    query: "fine"
    relevant:
      - {path: "a.html", grade: 2}
  - id: dup
    query: "   "
    relevant:
      - {path: "missing.html", grade: 2}
  - id: q3
    query: "bad grades"
    relevant:
      - {path: "a.html", grade: 3}
      - {path: "a.html", grade: true}
  - id: q4
    query: "only partial"
    relevant:
      - {path: "a.html", grade: 1, evidence: "hidden words"}
  - id: q5
    query: "escapes corpus"
    relevant:
      - {path: "../labels.yaml", grade: 2}
  - id: q6
    query: "nothing relevant"
    relevant: []
""",
    )
    problems = "\n".join(validate_label_file(labels, corpus, min_queries=10))
    expected = [
        "dup: duplicate id",
        "query text must be a non-empty string",
        "'missing.html' does not exist",
        "grade must be one of [1, 2], got 3",
        "grade must be one of [1, 2], got True",
        "'a.html' listed more than once",
        "q3: needs at least one grade-2",
        "q4: needs at least one grade-2",
        "evidence 'hidden words' not found in the text of a.html",
        "'../labels.yaml' must be relative to the corpus directory",
        "q6: relevant must be a non-empty list",
        "has 6 queries, at least 10 required",
    ]
    for fragment in expected:
        assert fragment in problems, f"missing {fragment!r} in:\n{problems}"


def test_validator_rejects_non_mapping_file(tmp_path: Path) -> None:
    labels = _write(tmp_path / "labels.yaml", "- just\n- a list\n")
    assert validate_label_file(labels, tmp_path) == [
        f"{labels}: top level must be a mapping with 'corpus' and 'queries'"
    ]
