"""The one Markdown table renderer behind every table the Dagster UI shows."""

import re

from pipeline.tables import Markdown, markdown_table


def cells(line: str) -> list[str]:
    """The cells of a Markdown table row: split on every ``|`` not escaped."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_a_table_has_its_header_a_separator_and_one_line_per_row():
    table = markdown_table(["query", "reason"], [("q1", "timeout"), ("q2", "http_500")])
    assert isinstance(table, Markdown)
    assert table.splitlines() == ["| query | reason |", "|---|---|", "| q1 | timeout |", "| q2 | http_500 |"]


def test_pipes_and_line_breaks_in_a_cell_stay_inside_that_cell():
    table = markdown_table(["query", "reason"], [("q1", "bad | worse\nworst"), ("q2", 3)])
    rows = table.splitlines()
    assert len(rows) == 4
    assert [cells(row) for row in rows[2:]] == [["q1", "bad \\| worse worst"], ["q2", "3"]]


def test_rows_past_the_limit_are_counted_in_a_last_row():
    table = markdown_table(["source", "url", "reason"], [(f"s{i}", f"u{i}", "x") for i in range(13)], limit=10)
    rows = table.splitlines()
    assert len(rows) == 2 + 10 + 1
    assert cells(rows[-1]) == ["… 3 more", "", ""]


def test_no_rows_read_none_and_numeric_columns_align_right():
    assert markdown_table(["a"], []) == "none"
    assert (
        markdown_table(["ranking", "ndcg@10"], [("bm25", "0.500")], right_aligned=["ndcg@10"]).splitlines()[1]
        == "|---|---:|"
    )
