import json
import re

import dagster as dg
import pytest

from pipeline.queries import MAX_QUERY_CHARACTERS, QueriesFileError, load_queries
from pipeline.store.records import Query
from pipeline.store.state import StateStore, sqlite_url
from tests.support import PipelineRun, make_resources, materialization_metadata


def test_yaml_mapping_and_list_forms(tmp_path):
    mapping = tmp_path / "q.yaml"
    mapping.write_text("queries:\n  - {id: a1, query: ' How do I deploy? '}\n  - {id: 7, query: 'Why 401?'}\n")
    bare = tmp_path / "bare.yml"
    bare.write_text("- {id: x, query: hello}\n")
    assert [(q.query_id, q.query) for q in load_queries(mapping)] == [("a1", "How do I deploy?"), ("7", "Why 401?")]
    assert [q.query_id for q in load_queries(bare)] == ["x"]


def test_jsonl(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "a", "query": "one"}) + "\n\n" + json.dumps({"id": "b", "query": "two"}) + "\n")
    assert [q.query for q in load_queries(path)] == ["one", "two"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("q.yaml", "queries:\n  - {id: a, query: x}\n  - {id: a, query: y}\n", "duplicate query id 'a'"),
        ("q.yaml", "queries:\n  - {query: x}\n", "entry 1: 'id' must be a non-empty string"),
        ("q.yaml", "queries:\n  - {id: a, query: '  '}\n", "'query' must be a non-empty string"),
        ("q.yaml", "queries: {a: b}\n", "expected a list of queries"),
        ("q.yaml", "queries: [\n", "invalid YAML"),
        ("q.jsonl", '{"id": "a", "query": "x"}\n{oops\n', "line 2: invalid JSON"),
        ("q.yaml", "queries: []\n", "no queries found"),
    ],
)
def test_errors_name_the_file_and_entry(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(QueriesFileError) as raised:
        load_queries(path)
    assert message in str(raised.value)
    assert str(path) in str(raised.value)


def test_missing_file_names_the_setting(tmp_path):
    with pytest.raises(QueriesFileError, match="PIPELINE_QUERIES"):
        load_queries(tmp_path / "absent.yaml")


def _jsonl(path, *queries):
    path.write_text("".join(json.dumps({"id": f"q{i}", "query": query}) + "\n" for i, query in enumerate(queries, 1)))
    return path


@pytest.mark.parametrize(
    ("bad_query", "message"),
    [
        ("before\x00after", "line 2: 'query' contains a NUL byte at character 7 (id 'q2')"),
        ("ring the bell\x07", "line 2: 'query' contains the control character U+0007 at character 14 (id 'q2')"),
        ("escape \x1b[31m red", "line 2: 'query' contains the control character U+001B at character 8 (id 'q2')"),
        ("a C1 \x85 control", "line 2: 'query' contains the control character U+0085 at character 6 (id 'q2')"),
        ("half a pair \ud83d", "line 2: 'query' contains an unpaired surrogate U+D83D at character 13 (id 'q2')"),
        (
            "x" * 100_000,
            f"line 2: 'query' is 100,000 characters, more than the {MAX_QUERY_CHARACTERS:,} allowed (id 'q2')",
        ),
    ],
    ids=["nul", "bell", "escape-sequence", "c1-control", "unpaired-surrogate", "100k-characters"],
)
def test_a_query_that_would_fail_later_is_refused_naming_the_file_and_entry(tmp_path, bad_query, message):
    path = _jsonl(tmp_path / "queries.jsonl", "a fine question", bad_query)
    with pytest.raises(QueriesFileError) as raised:
        load_queries(path)
    assert str(raised.value) == f"{path}: {message}"


def test_yaml_escapes_are_checked_like_jsonl(tmp_path):
    path = tmp_path / "queries.yaml"
    path.write_text('queries:\n  - {id: a, query: "fine"}\n  - {id: b, query: "tab\\tthen NUL\\0"}\n')
    with pytest.raises(QueriesFileError, match="entry 2: 'query' contains a NUL byte at character 13 \\(id 'b'\\)"):
        load_queries(path)


def test_an_id_with_a_control_character_is_refused(tmp_path):
    path = tmp_path / "queries.jsonl"
    path.write_text(json.dumps({"id": "q\x001", "query": "fine"}) + "\n")
    with pytest.raises(QueriesFileError, match="line 1: 'id' contains a NUL byte at character 2"):
        load_queries(path)


def test_ordinary_whitespace_and_a_query_at_the_cap_are_accepted(tmp_path):
    at_cap = "y" * MAX_QUERY_CHARACTERS
    path = _jsonl(tmp_path / "queries.jsonl", "written over\ntwo lines,\ta tab", f"  {at_cap}  ", "café – 日本語?")
    assert [q.query for q in load_queries(path)] == ["written over\ntwo lines,\ta tab", at_cap, "café – 日本語?"]


def test_the_queries_asset_refuses_a_bad_query_naming_the_file_and_entry_and_keeps_the_stored_ones(tmp_path):
    good = _jsonl(tmp_path / "good.jsonl", "How do I deploy?", "Why 401?")
    bad = _jsonl(tmp_path / "bad.jsonl", "How do I deploy?", "Why 401?\x00")
    with dg.DagsterInstance.ephemeral() as instance:

        def materialise(path):
            run = PipelineRun(make_resources(tmp_path, tmp_path / "sources.yaml", path, "http://127.0.0.1:9"), instance)
            return run.downstream(raise_on_error=False, selection=dg.AssetSelection.assets("queries"))

        assert materialise(good).success
        refused = materialise(bad)
    assert not refused.success
    [failure] = refused.get_step_failure_events()
    assert failure.step_failure_data.user_failure_data.description == (
        f"{bad}: line 2: 'query' contains a NUL byte at character 9 (id 'q2')"
    )
    store = StateStore(sqlite_url(tmp_path))
    assert store.rankings.queries() == [Query("q1", "How do I deploy?"), Query("q2", "Why 401?")]
    store.dispose()


def test_the_queries_preview_keeps_a_query_with_a_pipe_in_its_own_cell(tmp_path):
    path = _jsonl(tmp_path / "queries.jsonl", "Which is faster, dense | BM25?", "Why 401?")
    with dg.DagsterInstance.ephemeral() as instance:
        run = PipelineRun(make_resources(tmp_path, tmp_path / "sources.yaml", path, "http://127.0.0.1:9"), instance)
        result = run.downstream(selection=dg.AssetSelection.assets("queries"))
    preview = materialization_metadata(result, "queries")["preview"].splitlines()
    assert [re.split(r"(?<!\\)\|", row)[1:-1] for row in preview[2:]] == [
        [" q1 ", " Which is faster, dense \\| BM25? "],
        [" q2 ", " Why 401? "],
    ]
