"""Rendering the report as one self-contained HTML page: inline CSS, images as base64 data URIs,
no scripts, fonts or links outside the output folder.

A page is a list of ``Section``s (title, HTML fragment, figures, notes). Everything a user or a
study file wrote is escaped with ``html.escape`` before it reaches the page; fragments are built
with the helpers here (``table``, ``paragraph``, ``escape``).
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 1.5em; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { border: 1px solid #d0d0d0; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.reference td { background: #fff6ee; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #e3e3e3; }
figcaption { font-size: 0.9em; color: #444; margin-top: 0.3em; }
.note { background: #f6f6f6; border-left: 4px solid #aaa; padding: 0.4em 0.8em; margin: 0.6em 0;
        font-size: 0.9em; }
.note.error { border-left-color: #c0392b; }
.sentence { font-size: 1.05em; margin: 0.3em 0; }
nav ul { columns: 2; font-size: 0.92em; }
.muted { color: #666; font-size: 0.9em; }
.scroll { overflow-x: auto; max-width: 100%; }
.back { font-size: 0.92em; }
"""


@dataclass(frozen=True)
class FigureRef:
    """A figure of a section: its PNG file (under OUT/report/) and caption."""

    path: Path
    title: str
    caption: str


@dataclass
class Section:
    """One part of the report: a title, an HTML fragment, its figures and notes (plain text,
    e.g. why a figure was skipped). ``anchor`` is derived from the title when empty."""

    title: str
    body: str = ""
    figures: list[FigureRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    anchor: str = ""

    def slug(self) -> str:
        """The section's id in the page."""
        return self.anchor or re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def escape(value: object) -> str:
    """``html.escape`` of ``str(value)``."""
    return html.escape(str(value), quote=True)


def paragraph(text: str, css_class: str = "") -> str:
    """A ``<p>`` of escaped text."""
    attr = f' class="{escape(css_class)}"' if css_class else ""
    return f"<p{attr}>{escape(text)}</p>"


def number(value: object, digits: int = 4) -> str:
    """A number for a table: ``digits`` significant digits, ``—`` for missing/NaN."""
    if value is None:
        return "—"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return escape(value)
    if math.isnan(x):
        return "—"
    if x.is_integer() and abs(x) >= 1000:
        return f"{int(x):,}"
    return f"{x:.{digits}g}"


def percent(value: float | None) -> str:
    """``0.93`` → ``93%``; ``—`` for missing/NaN."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.0%}"


@dataclass(frozen=True)
class Cell:
    """A table cell whose HTML is already safe (``html``), right-aligned when ``numeric``."""

    html: str
    numeric: bool = False


def table(headers: Sequence[str] | None, rows: Iterable[Sequence[object]],
          row_classes: Sequence[str] | None = None) -> str:
    """An HTML table in a horizontally scrolling box (wide tables never overflow the page);
    plain values are escaped, ``Cell`` values are inserted as they are, ints and floats are
    formatted with ``number``. ``headers`` None: no header row."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers or ())
    body = []
    for i, row in enumerate(rows):
        cells = []
        for value in row:
            if isinstance(value, Cell):
                cls = ' class="num"' if value.numeric else ""
                cells.append(f"<td{cls}>{value.html}</td>")
            elif isinstance(value, int | float) and not isinstance(value, bool):
                cells.append(f'<td class="num">{number(value)}</td>')
            else:
                cells.append(f"<td>{escape('—' if value is None else value)}</td>")
        cls = f' class="{escape(row_classes[i])}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f'<div class="scroll"><table>{thead}<tbody>{"".join(body)}</tbody></table></div>'


def relative_folder(folder: str | None, root: Path) -> str | None:
    """``folder`` relative to ``root`` when it lies inside it (as given otherwise; None for
    none): how tables name checkpoint folders."""
    if not folder:
        return None
    try:
        return str(Path(folder).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(folder)


def data_uri(path: Path) -> str:
    """The PNG at ``path`` as a ``data:image/png;base64,…`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure(ref: FigureRef) -> str:
    """A ``<figure>`` with the image embedded and a caption naming the saved file."""
    return (f'<figure><img src="{data_uri(ref.path)}" alt="{escape(ref.title)}">'
            f"<figcaption><b>{escape(ref.title)}.</b> {escape(ref.caption)} "
            f'<span class="muted">(also saved as report/{escape(ref.path.name)})</span>'
            f"</figcaption></figure>")


def render_section(section: Section) -> str:
    """A section as ``<section>`` HTML: title, body, figures, then notes."""
    parts = [f'<section id="{escape(section.slug())}"><h2>{escape(section.title)}</h2>',
             section.body]
    parts += [figure(ref) for ref in section.figures]
    parts += [f'<div class="note">{escape(note)}</div>' for note in section.notes]
    parts += [f'<div class="note error">{escape(err)}</div>' for err in section.errors]
    parts.append("</section>")
    return "\n".join(parts)


def render_page(title: str, subtitle: str, sections: Sequence[Section],
                back: str | None = None) -> str:
    """The whole HTML document: a link back to the index of studies (``back``, a relative
    href) when there is one, header, table of contents and the sections."""
    toc = "".join(f'<li><a href="#{escape(s.slug())}">{escape(s.title)}</a></li>'
                  for s in sections)
    back_link = (f'<p class="back"><a href="{escape(back)}">← all studies of this run</a></p>'
                 if back else "")
    body = "\n".join(render_section(s) for s in sections)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style></head><body>\n{back_link}"
        f"<h1>{escape(title)}</h1>{paragraph(subtitle, 'muted')}\n"
        f"<nav><ul>{toc}</ul></nav>\n{body}\n</body></html>\n"
    )
