"""Markdown tables for what a benchmark prints: one header, one line per row, the figures aligned right."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a table of ``rows`` under ``header``: the first column (what was measured) aligned left,
    the others (figures) right."""
    return [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
    ]
