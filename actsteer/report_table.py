"""Reports as values: titled tables and lines of text that print aligned in a terminal
and render as HTML tables in a notebook.

A :class:`Report` is a sequence of blocks, each a :class:`Table` (title, column headers,
rows of already formatted cells, an optional note under it) or a :class:`Lines` block of
sentences. ``str(report)`` is the terminal text (columns padded to their widest cell);
``report._repr_html_()`` is what Jupyter shows: the same cells in ``<table>`` elements,
which wrap inside the cell width instead of running past it.

Example::

    table = Table("cost", ("plan", "x unsteered"), (("simultaneous", "1.21 [1.10, 1.33]"),))
    report = Report((Lines(("expressed behaviours",)), table))
    print(report)          # aligned text
    report                 # in a notebook: an HTML table
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from actsteer.errors import InvalidValueError

__all__ = ["Lines", "Report", "Table"]

_GAP = 2
"""Spaces between two columns of a table printed as text."""


@dataclass(frozen=True)
class Table:
    """A titled table of formatted cells."""

    title: str
    """One line saying what the table holds and how to read it."""
    columns: tuple[str, ...]
    """Column headers."""
    rows: tuple[tuple[str, ...], ...]
    """Cells, row by row, each row as long as ``columns``."""
    note: str = ""
    """A line printed under the table (e.g. what it shows), or empty."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(str(c) for c in self.columns))
        object.__setattr__(self, "rows", tuple(tuple(str(c) for c in row) for row in self.rows))
        bad = [i for i, row in enumerate(self.rows) if len(row) != len(self.columns)]
        if bad:
            raise InvalidValueError(f"table {self.title!r}: row {bad[0]} has "
                                    f"{len(self.rows[bad[0]])} cells for {len(self.columns)} "
                                    "columns; give one cell per column")

    def lines(self) -> list[str]:
        """The table as aligned text lines: title, header, rule, rows, note."""
        widths = [max(len(cell) for cell in column)
                  for column in zip(self.columns, *self.rows, strict=True)]

        def line(cells: tuple[str, ...]) -> str:
            return (" " * _GAP).join(c.ljust(w) for c, w in zip(cells, widths, strict=True)
                                     ).rstrip()

        header = line(self.columns)
        out = [self.title, header, "-" * len(header), *(line(row) for row in self.rows)]
        return out + ([self.note] if self.note else [])

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in self.rows)
        note = f"<p>{html.escape(self.note)}</p>" if self.note else ""
        return (f"<p><b>{html.escape(self.title)}</b></p><table><thead><tr>{head}</tr>"
                f"</thead><tbody>{body}</tbody></table>{note}")


@dataclass(frozen=True)
class Lines:
    """Sentences of a report, one per line (indented lines continue the one above)."""

    lines: tuple[str, ...]
    """The lines."""
    preformatted: bool = False
    """Whether the lines are laid out by their spaces (a table already printed as text),
    so a notebook shows them as they are, in monospace."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", tuple(str(x) for x in self.lines))

    def __str__(self) -> str:
        return "\n".join(self.lines)

    def _repr_html_(self) -> str:
        if self.preformatted:
            return f"<pre>{html.escape(str(self))}</pre>"
        return "".join(f"<p style=\"margin: 0 0 0 {2 * (len(x) - len(x.lstrip()))}ch\">"
                       f"{html.escape(x.strip())}</p>" for x in self.lines)


@dataclass(frozen=True)
class Report:
    """Blocks of a report, printed with a blank line between them."""

    blocks: tuple[Table | Lines, ...]

    def __str__(self) -> str:
        return "\n\n".join(str(block) for block in self.blocks if str(block))

    def _repr_html_(self) -> str:
        return "<div>" + "<br>".join(block._repr_html_() for block in self.blocks) + "</div>"
