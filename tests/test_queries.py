import json

import pytest

from pipeline.queries import QueriesFileError, load_queries


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
