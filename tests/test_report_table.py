"""Report values: aligned text in a terminal, the same cells as HTML tables in a notebook."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from actsteer.report_table import Lines, Report, Table


class Cells(HTMLParser):
    """The text of every ``<th>``/``<td>`` of an HTML fragment, row by row, per table."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data) -> None:
        if self.cell is not None:
            self.cell.append(data)


def tables_of(html: str) -> list[list[list[str]]]:
    parser = Cells()
    parser.feed(html)
    return parser.tables


def check_same_cells(table: Table) -> None:
    """The HTML holds exactly the table's cells, and each text line holds its row's cells
    in order, padded apart."""
    (found,) = tables_of(table._repr_html_())
    assert found == [list(table.columns), *(list(row) for row in table.rows)]
    lines = str(table).splitlines()
    assert lines[0] == table.title and set(lines[2]) == {"-"}
    for row, line in zip(table.rows, lines[3:], strict=False):
        at = 0
        for cell in row:
            at = line.index(cell, at) + len(cell)


def test_a_table_prints_aligned_and_renders_the_same_cells_as_html() -> None:
    table = Table("effects <paired>", ("behaviour", "Δ [95% CI]"),
                  (("sentiment", "Δ +4.33 [+4.01, +4.64]"), ("a<b & c", "-")), note="so it moves")
    check_same_cells(table)
    lines = str(table).splitlines()
    assert lines[1].index("Δ [95% CI]") == lines[3].index("Δ +4.33") == lines[4].index("-")
    assert lines[-1] == "so it moves"
    html = table._repr_html_()
    assert "<table>" in html and "a&lt;b &amp; c" in html and "effects &lt;paired&gt;" in html


def test_a_report_joins_its_blocks_and_a_ragged_table_is_refused() -> None:
    table = Table("t", ("a", "b"), (("1", "2"),))
    report = Report((Lines(("first", "  indented")), table))
    assert str(report) == "first\n  indented\n\n" + str(table)
    assert report._repr_html_().count("<table>") == 1 and "indented" in report._repr_html_()
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        Table("t", ("a", "b"), (("1",),))


def test_preformatted_lines_keep_their_layout_in_html() -> None:
    block = Lines(("a    b", "x<y  z"), preformatted=True)
    assert block._repr_html_() == "<pre>a    b\nx&lt;y  z</pre>"
    assert str(block) == "a    b\nx<y  z"
