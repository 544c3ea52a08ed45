"""The one way the pipeline renders a table for the Dagster UI: Markdown, each cell on one line.

Library modules return :class:`Markdown` values in their reports, and ``pipeline/defs`` shows them
with ``dagster.MetadataValue.md``; assets render their own tables with :func:`markdown_table` too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence


class Markdown(str):
    """A metadata value to render as Markdown (a table), not as plain text."""


def markdown_table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    limit: int | None = None,
    right_aligned: Collection[str] = (),
    total: int | None = None,
) -> Markdown:
    """A table of ``rows`` under ``header``; ``none`` when there are no rows.

    Cells are joined onto one line and their ``|`` escaped, so a multi-line error message
    cannot break the table. With ``limit``, the rows past it are counted in a last row;
    ``total`` is how many rows there are when ``rows`` holds only the first of them.
    ``right_aligned`` names the (numeric) columns aligned right.
    """
    rows = list(rows)
    if not rows:
        return Markdown("none")
    shown = rows if limit is None else rows[:limit]
    lines = [_row(header), "|" + "".join("---:|" if name in right_aligned else "---|" for name in header)]
    lines += [_row(row) for row in shown]
    hidden = (len(rows) if total is None else total) - len(shown)
    if hidden > 0:
        lines.append(_row([f"… {hidden} more", *[""] * (len(header) - 1)]))
    return Markdown("\n".join(lines))


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(" ".join(str(cell).split()).replace("|", "\\|") for cell in cells) + " |"
